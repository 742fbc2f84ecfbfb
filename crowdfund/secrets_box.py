"""Encryption at rest for the few fields that must not sit in the database in
the clear (a backer's bank details): Fernet tokens under keys from the
environment, several at once (MultiFernet) so keys can be rotated: the first
key encrypts, every key decrypts, `rotate` re-encrypts under the first.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key (PAYOUT_DETAILS_KEYS)")
        self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in keys])

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise ValueError("sealed with a key that is no longer configured") from exc

    def rotate(self, token: str) -> str:
        """The same secret sealed under the current (first) key."""
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")


def secret_box_from(setting: str) -> SecretBox:
    """Keys comma-separated, newest first (`PAYOUT_DETAILS_KEYS`)."""
    return SecretBox([key.strip() for key in setting.split(",") if key.strip()])

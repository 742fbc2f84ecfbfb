"""Password hashing with argon2id. Cost is set once at app start."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
MIN_LENGTH = 10
#: Hashing a megabyte of "password" is a cheap denial of service; refuse it.
MAX_LENGTH = 256


def configure(time_cost: int, memory_cost_kib: int) -> None:
    global _hasher
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """The reason a new password is refused, or None if it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    if password.isdigit() or len(set(password)) < 4:
        return "That password is too easy to guess."
    return None

"""E-mailed link tokens: the password reset and the e-mail confirmation.

Both are signed (itsdangerous, with the app's secret key and one salt per kind
of link) and timestamped on the app's clock, and name a user id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from crowdfund.accounts import passwords
from crowdfund.accounts.models import RememberToken, User
from crowdfund.accounts.users import find_user_by_email
from crowdfund.db import rowcount
from crowdfund.errors import DomainError
from crowdfund.mail.outbox import queue_email

# The password reset.
#
# The token is signed (itsdangerous, with the app's secret key and its own salt)
# and carries the time it was made, the user's id, session_version and a
# fingerprint of the current password hash. It is refused when it is older than
# max_age, when the password changed since (the fingerprint differs) and once it
# has been used: using it changes the password and bumps session_version. The
# bump also logs out every session that was open with the old password.

RESET_SALT = "crowdfund.password-reset"
INVALID_RESET_LINK = "This password-reset link is invalid or has already been used. Ask for a new one."
EXPIRED_RESET_LINK = "This password-reset link has expired. Ask for a new one."


def _clocked_serializer(secret_key: str, salt: str, now: datetime) -> URLSafeTimedSerializer:
    """Signed, timestamped tokens on the app's clock, not time.time(), so
    expiry is testable without sleeping. One salt per kind of link."""
    timestamp = int(now.timestamp())

    class _ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return timestamp

    return URLSafeTimedSerializer(secret_key, salt=salt, signer=_ClockSigner)


def _load_link_token(
    serializer: URLSafeTimedSerializer, token: str, max_age_seconds: int, *, expired: str, invalid: str
) -> dict[str, Any]:
    """The payload of an e-mailed link's token, naming a user id ("u"); the
    link's own message (expired or invalid) as a DomainError otherwise."""
    try:
        payload = serializer.loads((token or "")[:500], max_age=max_age_seconds)
    except SignatureExpired as exc:
        raise DomainError(expired, field="token") from exc
    except BadSignature as exc:
        raise DomainError(invalid, field="token") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("u"), int):
        raise DomainError(invalid, field="token")
    return payload


def _reset_serializer(secret_key: str, now: datetime) -> URLSafeTimedSerializer:
    return _clocked_serializer(secret_key, RESET_SALT, now)


def _password_fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def make_password_reset_token(user: User, *, secret_key: str, now: datetime) -> str:
    payload = {"u": user.id, "v": user.session_version, "p": _password_fingerprint(user)}
    return _reset_serializer(secret_key, now).dumps(payload)


def user_for_reset_token(
    session: Session, token: str, *, secret_key: str, now: datetime, max_age_seconds: int
) -> User:
    """The user a valid, unused, unexpired token belongs to; DomainError otherwise."""
    payload = _load_link_token(
        _reset_serializer(secret_key, now),
        token,
        max_age_seconds,
        expired=EXPIRED_RESET_LINK,
        invalid=INVALID_RESET_LINK,
    )
    user = session.get(User, payload["u"])
    if (
        user is None
        or not user.is_active
        or payload.get("v") != user.session_version
        or payload.get("p") != _password_fingerprint(user)
    ):
        raise DomainError(INVALID_RESET_LINK, field="token")
    return user


def request_password_reset(
    session: Session,
    email: str,
    *,
    secret_key: str,
    now: datetime,
    link_for: Callable[[str], str],
    max_age_seconds: int,
) -> bool:
    """E-mail a reset link if `email` belongs to an active account.

    Returns whether a mail was queued; the caller must not show it (the page
    says the same thing either way, so it reveals nothing about the address).
    """
    user = find_user_by_email(session, (email or "")[:254])
    if user is None or not user.is_active:
        return False
    token = make_password_reset_token(user, secret_key=secret_key, now=now)
    return queue_email(
        session,
        key=f"password-reset:{user.id}:{hashlib.sha256(token.encode()).hexdigest()[:32]}",
        to=user.email,
        template="password_reset",
        name=user.display_name,
        link=link_for(token),
        minutes=max_age_seconds // 60,
        tz=user.time_zone,
    )


def reset_password(
    session: Session, token: str, new_password: str, *, secret_key: str, now: datetime, max_age_seconds: int
) -> User:
    """Set a new password with a reset token; the token (and every open session) stops working."""
    user = user_for_reset_token(
        session, token, secret_key=secret_key, now=now, max_age_seconds=max_age_seconds
    )
    problem = passwords.password_problem(new_password or "")
    if problem:
        raise DomainError(problem, field="password")
    new_hash = passwords.hash_password(passwords.hasher_for(session), new_password)
    # Conditional on the version the token was checked against: of two requests
    # racing with one token, only one changes the password.
    result = session.execute(
        update(User)
        .where(User.id == user.id, User.session_version == user.session_version)
        .values(password_hash=new_hash, session_version=User.session_version + 1)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise DomainError(INVALID_RESET_LINK, field="token")
    # Every "keep me logged in" cookie goes too: whoever had the old password may hold one.
    session.execute(delete(RememberToken).where(RememberToken.user_id == user.id))
    session.expire(user)
    queue_password_changed(session, user, now=now)
    return user


def queue_password_changed(session: Session, user: User, *, now: datetime) -> bool:
    """Tell the account's address its password changed (after a reset or a
    change), with a link to reset it if it was not them. Once per password:
    keyed by the session_version the change set."""
    return queue_email(
        session,
        key=f"password-changed:{user.id}:{user.session_version}",
        to=user.email,
        template="password_changed",
        name=user.display_name,
        changed_at=now,
        tz=user.time_zone,
    )


# The e-mail confirmation.
#
# The link carries a signed, timestamped token (like the password reset, with
# its own salt) naming the user and the address it was sent to. Opening it
# marks the address verified; opening it again changes nothing.

VERIFY_SALT = "crowdfund.email-verify"
INVALID_VERIFY_LINK = (
    "This confirmation link is invalid. Log in and ask for a new one from your account page."
)
EXPIRED_VERIFY_LINK = (
    "This confirmation link has expired. Log in and ask for a new one from your account page."
)


def _verify_serializer(secret_key: str, now: datetime) -> URLSafeTimedSerializer:
    return _clocked_serializer(secret_key, VERIFY_SALT, now)


def make_verification_token(user: User, *, secret_key: str, now: datetime) -> str:
    return _verify_serializer(secret_key, now).dumps({"u": user.id, "e": user.email})


def send_verification_email(
    session: Session,
    user: User,
    *,
    secret_key: str,
    now: datetime,
    link_for: Callable[[str], str],
    max_age_seconds: int,
    welcome: bool = False,
) -> bool:
    """Queue a mail with a link that confirms `user`'s address: at sign-up a
    welcome (once per account), else "send it again"."""
    if user.email_verified_at is not None:
        return False
    token = make_verification_token(user, secret_key=secret_key, now=now)
    return queue_email(
        session,
        key=f"welcome:{user.id}" if welcome else f"verify:{user.id}:{int(now.timestamp())}",
        to=user.email,
        template="welcome" if welcome else "verify_email",
        name=user.display_name,
        link=link_for(token),
        hours=max(1, max_age_seconds // 3600),
        expires_at=now + timedelta(seconds=max_age_seconds),
        tz=user.time_zone,
    )


def verify_email(
    session: Session, token: str, *, secret_key: str, now: datetime, max_age_seconds: int
) -> User:
    """Mark the address a valid token names verified; DomainError otherwise."""
    payload = _load_link_token(
        _verify_serializer(secret_key, now),
        token,
        max_age_seconds,
        expired=EXPIRED_VERIFY_LINK,
        invalid=INVALID_VERIFY_LINK,
    )
    user = session.get(User, payload["u"])
    if user is None or not user.is_active or payload.get("e") != user.email:
        raise DomainError(INVALID_VERIFY_LINK, field="token")
    if user.email_verified_at is None:
        user.email_verified_at = now
        session.flush()
    return user

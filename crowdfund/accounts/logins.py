"""Sessions and "keep me logged in": remember-me tokens, and logging a user
out everywhere.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from crowdfund.accounts.models import RememberToken, User
from crowdfund.db import rowcount

# A session cookie names "<id>.<session_version>" (User.get_id); load_user
# refuses it once session_version has moved on. Logging out moves it on, so a
# copy of the cookie kept from before stops working, in every browser.
#
# A remember-me cookie holds a random token; the server keeps its SHA-256 with
# an expiry (30 days from log-in, never extended) and the session_version it was
# issued under. Each time it logs a browser in it is replaced by a new one; the
# old one is still accepted for REMEMBER_REUSE_GRACE (a browser's parallel
# requests all carry it), after that its return means a copy is in other hands
# and all of the user's tokens are deleted.

REMEMBER_REUSE_GRACE = timedelta(seconds=30)


def _token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class RememberedLogin:
    user_token: str  # User.get_id() for the session
    expires_at: datetime
    #: The token to put in the cookie instead, or None to leave the cookie as it is.
    new_token: str | None


def issue_remember_token(
    session: Session, user: User, *, now: datetime, lifetime: timedelta, expires_at: datetime | None = None
) -> tuple[str, datetime]:
    raw = secrets.token_urlsafe(32)
    expires_at = expires_at or now + lifetime
    session.add(
        RememberToken(
            user_id=user.id,
            token_hash=_token_hash(raw),
            session_version=user.session_version,
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()
    return raw, expires_at


def use_remember_token(session: Session, raw: str, *, now: datetime) -> RememberedLogin | None:
    """The login a remember-me token gives (rotating the token), or None."""
    row = session.execute(
        select(RememberToken, User.session_version, User.is_active)
        .join(User, User.id == RememberToken.user_id)
        .where(RememberToken.token_hash == _token_hash(raw))
    ).one_or_none()
    if row is None:
        return None
    token, session_version, is_active = row
    if not is_active or token.session_version != session_version or token.expires_at <= now:
        session.delete(token)
        session.flush()
        return None
    user_token = f"{token.user_id}.{session_version}"
    if token.rotated_at is not None:
        if now - token.rotated_at <= REMEMBER_REUSE_GRACE:
            return RememberedLogin(user_token, token.expires_at, None)
        session.execute(delete(RememberToken).where(RememberToken.user_id == token.user_id))
        return None
    # Conditional: of two requests rotating one token at once, one issues the successor.
    rotated = session.execute(
        update(RememberToken)
        .where(RememberToken.id == token.id, RememberToken.rotated_at.is_(None))
        .values(rotated_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(rotated) != 1:
        return RememberedLogin(user_token, token.expires_at, None)
    # Replaced tokens are kept until they expire, so that one coming back is recognised as a copy.
    session.execute(
        delete(RememberToken).where(RememberToken.user_id == token.user_id, RememberToken.expires_at <= now)
    )
    new_raw = secrets.token_urlsafe(32)
    session.add(
        RememberToken(
            user_id=token.user_id,
            token_hash=_token_hash(new_raw),
            session_version=session_version,
            created_at=now,
            expires_at=token.expires_at,
        )
    )
    session.flush()
    return RememberedLogin(user_token, token.expires_at, new_raw)


def end_all_sessions(session: Session, user: User) -> None:
    """Log `user` out everywhere: every session cookie and every remember-me token stops working."""
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(session_version=User.session_version + 1)
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(RememberToken).where(RememberToken.user_id == user.id))
    session.expire(user, ["session_version"])

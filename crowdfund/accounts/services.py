"""Account services: sign-up, authentication, roles and studio membership."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy.orm import Session, lazyload

from crowdfund import audit
from crowdfund.accounts import passwords
from crowdfund.accounts.models import STORED_ROLES, RememberToken, Role, Studio, StudioMember, User, UserRole
from crowdfund.db import rowcount, utcnow
from crowdfund.errors import Conflict, DomainError, NotFound
from crowdfund.mail import queue_email
from crowdfund.text import TextProblem, single_line

# A hash of nothing, verified when the e-mail is unknown so that a failed
# log-in takes the same time whether or not the account exists.
_DUMMY_HASH: str | None = None


def normalize_email(email: str) -> str:
    try:
        result = validate_email((email or "").strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise DomainError("Enter a valid e-mail address.", field="email") from exc
    return result.normalized.lower()


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.strip().lower()))


def create_user(
    session: Session,
    email: str,
    password: str,
    display_name: str,
    roles: tuple[Role, ...] = (Role.FAN,),
    *,
    email_verified_at: datetime | None = None,
) -> User:
    """An account (staff tools, tests, demo); sign-up goes through sign_up().
    Accounts made by staff are verified by whoever made them: pass the time."""
    email, display_name = _check_sign_up(email, password, display_name)
    if find_user_by_email(session, email) is not None:
        raise Conflict("An account with this e-mail already exists.", field="email")
    user = User(
        email=email,
        display_name=display_name[:80],
        password_hash=passwords.hash_password(passwords.hasher_for(session), password),
        email_verified_at=email_verified_at,
    )
    user.roles = [UserRole(role=r.value) for r in roles if r in STORED_ROLES]
    session.add(user)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        # Two sign-ups with the same e-mail at once: the unique index decides.
        raise Conflict("An account with this e-mail already exists.", field="email") from exc
    return user


def _check_sign_up(email: str, password: str, display_name: str) -> tuple[str, str]:
    email = normalize_email(email)
    problem = passwords.password_problem(password)
    if problem:
        raise DomainError(problem, field="password")
    display_name = _single_line(display_name, "Your name", "display_name")
    if not display_name:
        raise DomainError("Enter your name.", field="display_name")
    return email, display_name


def sign_up(session: Session, email: str, password: str, display_name: str, *, now: datetime,
            secret_key: str, verify_link_for: Callable[[str], str], owner_links: dict[str, str],
            verify_max_age_seconds: int) -> User | None:
    """A fan account, unverified, with a verification link e-mailed to it.

    When the address already has an account nothing is created and its owner
    is told by e-mail instead (owner_links: "login" and "reset" URLs). The
    caller must answer the same either way, so sign-up reveals nothing about
    which addresses have accounts; the password is hashed either way, so
    neither does the time it takes. Returns the new user, or None.
    """
    email, display_name = _check_sign_up(email, password, display_name)
    existing = find_user_by_email(session, email)
    if existing is None:
        try:
            user = create_user(session, email, password, display_name, roles=(Role.FAN,))
        except Conflict:
            existing = find_user_by_email(session, email)  # the same address signed up at the same moment
        else:
            send_verification_email(session, user, secret_key=secret_key, now=now, link_for=verify_link_for,
                                    max_age_seconds=verify_max_age_seconds)
            return user
    else:
        passwords.hash_password(passwords.hasher_for(session), password)  # the time a new account takes
    if existing is not None and existing.is_active:
        queue_email(session, key=f"signup-exists:{existing.id}:{now:%Y%m%d%H%M}", to=existing.email,
                    template="signup_exists", name=existing.display_name, **owner_links)
    return None


def authenticate(session: Session, email: str, password: str) -> User | None:
    global _DUMMY_HASH
    hasher = passwords.hasher_for(session)
    user = find_user_by_email(session, email or "")
    if user is None or not user.is_active:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = passwords.hash_password(hasher, "not a real password")
        passwords.verify_password(hasher, _DUMMY_HASH, password or "")
        return None
    if not passwords.verify_password(hasher, user.password_hash, password or ""):
        return None
    return user


def load_user(session: Session, user_token: str) -> User | None:
    """Resolve the id flask-login keeps in the session ("<id>.<version>")."""
    user_id, _, version = (user_token or "").partition(".")
    if not (user_token or "").isascii() or not user_id.isdigit() or not version.isdigit():
        return None
    # Every request does this: one row with the role names and studio, not
    # three queries (or a joined load, which costs twice the CPU to turn into objects).
    row = session.execute(_LOAD_USER, {"user_id": int(user_id)}).one_or_none()
    if row is None:
        return None
    user, stored_roles, studio_id = row
    if not user.is_active or user.session_version != int(version):
        return None
    user.remember_access(stored_roles, studio_id)
    return user


_LOAD_USER = (
    select(
        User,
        select(func.aggregate_strings(UserRole.role, ",")).where(UserRole.user_id == User.id).scalar_subquery(),
        select(StudioMember.studio_id).where(StudioMember.user_id == User.id).scalar_subquery(),
    )
    .where(User.id == bindparam("user_id"))
    .options(lazyload(User.roles), lazyload(User.membership))
)


def grant_role(session: Session, user: User, role: str, *, acting_user: User | None = None,
               now: datetime | None = None) -> None:
    if role not in {r.value for r in STORED_ROLES}:
        raise DomainError(f"Unknown role {role!r}.")
    if role not in {r.role for r in user.roles}:
        before = sorted(user.role_names)
        user.roles.append(UserRole(role=role))
        user.session_version += 1
        audit.record(session, action="role.grant", object_type="user", object_id=user.id, now=now or utcnow(),
                     actor=acting_user, before={"roles": before}, after={"roles": sorted(user.role_names)})
    session.flush()


def revoke_role(session: Session, user: User, role: str, *, acting_user: User, now: datetime | None = None) -> None:
    if role == Role.ADMIN and user.id == acting_user.id:
        raise DomainError("You cannot remove your own admin role.")
    before = sorted(user.role_names)
    for existing in list(user.roles):
        if existing.role == role:
            user.roles.remove(existing)
            user.session_version += 1
    if sorted(user.role_names) != before:
        audit.record(session, action="role.revoke", object_type="user", object_id=user.id, now=now or utcnow(),
                     actor=acting_user, before={"roles": before}, after={"roles": sorted(user.role_names)})
    session.flush()


def _single_line(value: str, label: str, field: str) -> str:
    try:
        return single_line(value, label)
    except TextProblem as exc:
        raise DomainError(exc.message, field=field) from exc


def create_studio(session: Session, name: str) -> Studio:
    name = _single_line(name, "The studio name", "name")
    if not name:
        raise DomainError("Enter the studio's name.", field="name")
    if session.scalar(select(Studio).where(func.lower(Studio.name) == name.lower())):
        raise Conflict("A studio with this name already exists.", field="name")
    studio = Studio(name=name[:120])
    session.add(studio)
    session.flush()
    return studio


def get_or_create_studio(session: Session, name: str) -> Studio:
    name = _single_line(name, "The studio name", "name")
    existing = session.scalar(select(Studio).where(func.lower(Studio.name) == name.lower()))
    return existing or create_studio(session, name)


def set_studio(session: Session, user: User, studio: Studio | None, *, acting_user: User | None = None,
               now: datetime | None = None) -> None:
    """Make `user` a member of `studio`, or of none (removes the studio role)."""
    current = user.membership.studio_id if user.membership else None
    if current == (studio.id if studio else None):
        return
    user.membership = StudioMember(studio_id=studio.id) if studio is not None else None
    user.session_version += 1
    audit.record(session, action="role.studio", object_type="user", object_id=user.id, now=now or utcnow(),
                 actor=acting_user, before={"studio_id": current}, after={"studio_id": studio.id if studio else None})
    session.flush()


def get_studio(session: Session, studio_id: int) -> Studio:
    studio = session.get(Studio, studio_id)
    if studio is None:
        raise NotFound("No such studio.")
    return studio


# --- password reset ------------------------------------------------------------------
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


def _load_link_token(serializer: URLSafeTimedSerializer, token: str, max_age_seconds: int, *,
                     expired: str, invalid: str) -> dict[str, Any]:
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


def user_for_reset_token(session: Session, token: str, *, secret_key: str, now: datetime,
                         max_age_seconds: int) -> User:
    """The user a valid, unused, unexpired token belongs to; DomainError otherwise."""
    payload = _load_link_token(_reset_serializer(secret_key, now), token, max_age_seconds,
                               expired=EXPIRED_RESET_LINK, invalid=INVALID_RESET_LINK)
    user = session.get(User, payload["u"])
    if (user is None or not user.is_active or payload.get("v") != user.session_version
            or payload.get("p") != _password_fingerprint(user)):
        raise DomainError(INVALID_RESET_LINK, field="token")
    return user


def request_password_reset(session: Session, email: str, *, secret_key: str, now: datetime,
                           link_for: Callable[[str], str], max_age_seconds: int) -> bool:
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
    )


def reset_password(session: Session, token: str, new_password: str, *, secret_key: str, now: datetime,
                   max_age_seconds: int) -> User:
    """Set a new password with a reset token; the token (and every open session) stops working."""
    user = user_for_reset_token(session, token, secret_key=secret_key, now=now, max_age_seconds=max_age_seconds)
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
    return user


# --- e-mail verification ------------------------------------------------------------
#
# The link carries a signed, timestamped token (like the password reset, with
# its own salt) naming the user and the address it was sent to. Opening it
# marks the address verified; opening it again changes nothing.

VERIFY_SALT = "crowdfund.email-verify"
INVALID_VERIFY_LINK = "This confirmation link is invalid. Log in and ask for a new one from your account page."
EXPIRED_VERIFY_LINK = "This confirmation link has expired. Log in and ask for a new one from your account page."


def _verify_serializer(secret_key: str, now: datetime) -> URLSafeTimedSerializer:
    return _clocked_serializer(secret_key, VERIFY_SALT, now)


def make_verification_token(user: User, *, secret_key: str, now: datetime) -> str:
    return _verify_serializer(secret_key, now).dumps({"u": user.id, "e": user.email})


def send_verification_email(session: Session, user: User, *, secret_key: str, now: datetime,
                            link_for: Callable[[str], str], max_age_seconds: int) -> bool:
    """Queue a mail with a link that confirms `user`'s address (sign-up, or "send it again")."""
    if user.email_verified_at is not None:
        return False
    token = make_verification_token(user, secret_key=secret_key, now=now)
    return queue_email(session, key=f"verify:{user.id}:{int(now.timestamp())}", to=user.email,
                       template="verify_email", name=user.display_name, link=link_for(token),
                       hours=max(1, max_age_seconds // 3600))


def verify_email(session: Session, token: str, *, secret_key: str, now: datetime, max_age_seconds: int) -> User:
    """Mark the address a valid token names verified; DomainError otherwise."""
    payload = _load_link_token(_verify_serializer(secret_key, now), token, max_age_seconds,
                               expired=EXPIRED_VERIFY_LINK, invalid=INVALID_VERIFY_LINK)
    user = session.get(User, payload["u"])
    if user is None or not user.is_active or payload.get("e") != user.email:
        raise DomainError(INVALID_VERIFY_LINK, field="token")
    if user.email_verified_at is None:
        user.email_verified_at = now
        session.flush()
    return user


# --- sessions and "keep me logged in" -------------------------------------------------
#
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


def issue_remember_token(session: Session, user: User, *, now: datetime, lifetime: timedelta,
                         expires_at: datetime | None = None) -> tuple[str, datetime]:
    raw = secrets.token_urlsafe(32)
    expires_at = expires_at or now + lifetime
    session.add(RememberToken(user_id=user.id, token_hash=_token_hash(raw), session_version=user.session_version,
                              created_at=now, expires_at=expires_at))
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
        update(RememberToken).where(RememberToken.id == token.id, RememberToken.rotated_at.is_(None))
        .values(rotated_at=now).execution_options(synchronize_session=False)
    )
    if rowcount(rotated) != 1:
        return RememberedLogin(user_token, token.expires_at, None)
    # Replaced tokens are kept until they expire, so that one coming back is recognised as a copy.
    session.execute(delete(RememberToken).where(RememberToken.user_id == token.user_id,
                                                RememberToken.expires_at <= now))
    new_raw = secrets.token_urlsafe(32)
    session.add(RememberToken(user_id=token.user_id, token_hash=_token_hash(new_raw), session_version=session_version,
                              created_at=now, expires_at=token.expires_at))
    session.flush()
    return RememberedLogin(user_token, token.expires_at, new_raw)


def end_all_sessions(session: Session, user: User) -> None:
    """Log `user` out everywhere: every session cookie and every remember-me token stops working."""
    session.execute(
        update(User).where(User.id == user.id).values(session_version=User.session_version + 1)
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(RememberToken).where(RememberToken.user_id == user.id))
    session.expire(user, ["session_version"])

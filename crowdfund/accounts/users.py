"""Users: creating an account, finding it by e-mail, logging in and loading
the user a session names.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload

from crowdfund.accounts import passwords
from crowdfund.accounts.models import STORED_ROLES, Role, StudioMember, User, UserRole
from crowdfund.errors import Conflict, DomainError
from crowdfund.text import single_line_field

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
    email, display_name = check_sign_up(email, password, display_name)
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


def check_sign_up(email: str, password: str, display_name: str) -> tuple[str, str]:
    email = normalize_email(email)
    problem = passwords.password_problem(password)
    if problem:
        raise DomainError(problem, field="password")
    display_name = single_line_field(display_name, "Your name", "display_name")
    if not display_name:
        raise DomainError("Enter your name.", field="display_name")
    return email, display_name


@cache
def time_zone_names() -> list[str]:
    """The IANA zones a user may choose, sorted (the account page offers them)."""
    return sorted(available_timezones())


def set_time_zone(session: Session, user: User, name: str | None) -> None:
    """The zone the user's e-mails show times in; empty means UTC. An unknown
    name is refused (and nothing changes)."""
    name = (name or "").strip()
    if name and name not in time_zone_names():
        raise DomainError(
            f"“{name[:64]}” is not a time zone we know. Choose one from the list, "
            "such as Europe/Paris or America/New_York, or leave it empty for UTC.",
            field="time_zone",
        )
    user.time_zone = name or None
    session.flush()


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
        select(func.aggregate_strings(UserRole.role, ","))
        .where(UserRole.user_id == User.id)
        .scalar_subquery(),
        select(StudioMember.studio_id).where(StudioMember.user_id == User.id).scalar_subquery(),
    )
    .where(User.id == bindparam("user_id"))
    .options(lazyload(User.roles), lazyload(User.membership))
)

"""Account services: sign-up, authentication, roles and studio membership."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crowdfund.accounts import passwords
from crowdfund.accounts.models import STORED_ROLES, Role, Studio, StudioMember, User, UserRole
from crowdfund.errors import Conflict, DomainError, NotFound

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
) -> User:
    email = normalize_email(email)
    problem = passwords.password_problem(password)
    if problem:
        raise DomainError(problem, field="password")
    display_name = display_name.strip()
    if not display_name:
        raise DomainError("Enter your name.", field="display_name")
    if find_user_by_email(session, email) is not None:
        raise Conflict("An account with this e-mail already exists.", field="email")
    user = User(
        email=email,
        display_name=display_name[:80],
        password_hash=passwords.hash_password(passwords.hasher_for(session), password),
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


def sign_up(session: Session, email: str, password: str, display_name: str) -> User:
    return create_user(session, email, password, display_name, roles=(Role.FAN,))


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
    if not user_id.isdigit() or not version.isdigit():
        return None
    user = session.get(User, int(user_id))
    if user is None or not user.is_active or user.session_version != int(version):
        return None
    return user


def grant_role(session: Session, user: User, role: str) -> None:
    if role not in {r.value for r in STORED_ROLES}:
        raise DomainError(f"Unknown role {role!r}.")
    if role not in {r.role for r in user.roles}:
        user.roles.append(UserRole(role=role))
        user.session_version += 1
    session.flush()


def revoke_role(session: Session, user: User, role: str, *, acting_user: User) -> None:
    if role == Role.ADMIN and user.id == acting_user.id:
        raise DomainError("You cannot remove your own admin role.")
    for existing in list(user.roles):
        if existing.role == role:
            user.roles.remove(existing)
            user.session_version += 1
    session.flush()


def create_studio(session: Session, name: str) -> Studio:
    name = name.strip()
    if not name:
        raise DomainError("Enter the studio's name.", field="name")
    if session.scalar(select(Studio).where(func.lower(Studio.name) == name.lower())):
        raise Conflict("A studio with this name already exists.", field="name")
    studio = Studio(name=name[:120])
    session.add(studio)
    session.flush()
    return studio


def get_or_create_studio(session: Session, name: str) -> Studio:
    existing = session.scalar(select(Studio).where(func.lower(Studio.name) == name.strip().lower()))
    return existing or create_studio(session, name)


def set_studio(session: Session, user: User, studio: Studio | None) -> None:
    """Make `user` a member of `studio`, or of none (removes the studio role)."""
    current = user.membership.studio_id if user.membership else None
    if current == (studio.id if studio else None):
        return
    user.membership = StudioMember(studio_id=studio.id) if studio is not None else None
    user.session_version += 1
    session.flush()


def get_studio(session: Session, studio_id: int) -> Studio:
    studio = session.get(Studio, studio_id)
    if studio is None:
        raise NotFound("No such studio.")
    return studio

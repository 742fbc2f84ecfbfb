"""Password hashing with argon2id. Cost is set once at app start."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from crowdfund.session_services import services_of

MIN_LENGTH = 10
#: Hashing a megabyte of "password" is a cheap denial of service; refuse it.
MAX_LENGTH = 256


def make_hasher(time_cost: int, memory_cost_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=1)


def hasher_for(session: Session) -> PasswordHasher:
    """The app's hasher (its costs come from the config), found through the session."""
    return services_of(session).password_hasher


def hash_password(hasher: PasswordHasher, password: str) -> str:
    return hasher.hash(password)


def verify_password(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
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

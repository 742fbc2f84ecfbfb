"""Signing up: a fan account, unverified, with a welcome e-mail carrying its verification link."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from crowdfund.accounts import passwords
from crowdfund.accounts.models import Role, User
from crowdfund.accounts.tokens import send_verification_email
from crowdfund.accounts.users import check_sign_up, create_user, find_user_by_email
from crowdfund.errors import Conflict
from crowdfund.mail.outbox import queue_email


def sign_up(
    session: Session,
    email: str,
    password: str,
    display_name: str,
    *,
    now: datetime,
    secret_key: str,
    verify_link_for: Callable[[str], str],
    owner_links: dict[str, str],
    verify_max_age_seconds: int,
) -> User | None:
    """A fan account, unverified, with a verification link e-mailed to it.

    When the address already has an account nothing is created and its owner
    is told by e-mail instead (owner_links: "login" and "reset" URLs). The
    caller must answer the same either way, so sign-up reveals nothing about
    which addresses have accounts; the password is hashed either way, so
    neither does the time it takes. Returns the new user, or None.
    """
    email, display_name = check_sign_up(email, password, display_name)
    existing = find_user_by_email(session, email)
    if existing is None:
        try:
            user = create_user(session, email, password, display_name, roles=(Role.FAN,))
        except Conflict:
            existing = find_user_by_email(session, email)  # the same address signed up at the same moment
        else:
            send_verification_email(
                session,
                user,
                secret_key=secret_key,
                now=now,
                link_for=verify_link_for,
                max_age_seconds=verify_max_age_seconds,
                welcome=True,
            )
            return user
    else:
        passwords.hash_password(passwords.hasher_for(session), password)  # the time a new account takes
    if existing is not None and existing.is_active:
        queue_email(
            session,
            key=f"signup-exists:{existing.id}:{now:%Y%m%d%H%M}",
            to=existing.email,
            template="signup_exists",
            name=existing.display_name,
            tz=existing.time_zone,
            **owner_links,
        )
    return None

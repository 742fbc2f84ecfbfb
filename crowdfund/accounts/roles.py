"""Granting and revoking a user's roles (audited; each change logs the user out)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from crowdfund import audit
from crowdfund.accounts.models import STORED_ROLES, Role, User, UserRole
from crowdfund.db import utcnow
from crowdfund.errors import DomainError


def grant_role(
    session: Session, user: User, role: str, *, acting_user: User | None = None, now: datetime | None = None
) -> None:
    if role not in {r.value for r in STORED_ROLES}:
        raise DomainError(f"Unknown role {role!r}.")
    if role not in {r.role for r in user.roles}:
        before = sorted(user.role_names)
        user.roles.append(UserRole(role=role))
        user.session_version += 1
        audit.record(
            session,
            action="role.grant",
            object_type="user",
            object_id=user.id,
            now=now or utcnow(),
            actor=acting_user,
            before={"roles": before},
            after={"roles": sorted(user.role_names)},
        )
    session.flush()


def revoke_role(
    session: Session, user: User, role: str, *, acting_user: User, now: datetime | None = None
) -> None:
    if role == Role.ADMIN and user.id == acting_user.id:
        raise DomainError("You cannot remove your own admin role.")
    before = sorted(user.role_names)
    for existing in list(user.roles):
        if existing.role == role:
            user.roles.remove(existing)
            user.session_version += 1
    if sorted(user.role_names) != before:
        audit.record(
            session,
            action="role.revoke",
            object_type="user",
            object_id=user.id,
            now=now or utcnow(),
            actor=acting_user,
            before={"roles": before},
            after={"roles": sorted(user.role_names)},
        )
    session.flush()

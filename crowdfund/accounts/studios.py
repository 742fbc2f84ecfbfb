"""Studios and their members."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdfund import audit
from crowdfund.accounts.models import Studio, StudioMember, User
from crowdfund.db import utcnow
from crowdfund.errors import Conflict, DomainError, NotFound
from crowdfund.text import single_line_field


def create_studio(session: Session, name: str) -> Studio:
    name = single_line_field(name, "The studio name", "name")
    if not name:
        raise DomainError("Enter the studio's name.", field="name")
    if session.scalar(select(Studio).where(func.lower(Studio.name) == name.lower())):
        raise Conflict("A studio with this name already exists.", field="name")
    studio = Studio(name=name[:120])
    session.add(studio)
    session.flush()
    return studio


def get_or_create_studio(session: Session, name: str) -> Studio:
    name = single_line_field(name, "The studio name", "name")
    existing = session.scalar(select(Studio).where(func.lower(Studio.name) == name.lower()))
    return existing or create_studio(session, name)


def set_studio(
    session: Session,
    user: User,
    studio: Studio | None,
    *,
    acting_user: User | None = None,
    now: datetime | None = None,
) -> None:
    """Make `user` a member of `studio`, or of none (removes the studio role)."""
    current = user.membership.studio_id if user.membership else None
    if current == (studio.id if studio else None):
        return
    user.membership = StudioMember(studio_id=studio.id) if studio is not None else None
    user.session_version += 1
    audit.record(
        session,
        action="role.studio",
        object_type="user",
        object_id=user.id,
        now=now or utcnow(),
        actor=acting_user,
        before={"studio_id": current},
        after={"studio_id": studio.id if studio else None},
    )
    session.flush()


def get_studio(session: Session, studio_id: int) -> Studio:
    studio = session.get(Studio, studio_id)
    if studio is None:
        raise NotFound("No such studio.")
    return studio

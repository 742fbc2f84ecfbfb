from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crowdfund.db import Base, UTCDateTime, utcnow


class Role(StrEnum):
    FAN = "fan"
    STUDIO = "studio"
    FINANCE = "finance"
    ADMIN = "admin"


#: Roles stored in user_roles; "studio" is derived from a studio membership.
STORED_ROLES = (Role.FAN, Role.FINANCE, Role.ADMIN)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Lower-cased and stripped, so uniqueness ignores case.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(80))
    #: argon2id hash; never the password.
    password_hash: Mapped[str] = mapped_column(String(255))
    #: Bumped on password or role change: older login cookies stop working.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: When the owner opened the link e-mailed at sign-up; holding stakes needs it.
    #: In the one row load_user reads, so the hold checks it for free.
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: The IANA zone (e.g. "Asia/Tokyo") e-mails show times in; None: UTC.
    time_zone: Mapped[str | None] = mapped_column(String(64), default=None)

    roles: Mapped[list[UserRole]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )
    membership: Mapped[StudioMember | None] = relationship(
        back_populates="user", lazy="selectin", cascade="all, delete-orphan"
    )

    # flask-login's protocol, without importing Flask into the model.
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"{self.id}.{self.session_version}"

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    def remember_access(self, stored_roles: str | None, studio_id: int | None) -> None:
        """Keep the role names (comma-separated) and studio read in the same row
        as the user (accounts.users.load_user), so that checking who may see a
        page loads no relationship. Once `roles` or `membership` is loaded (the
        admin pages that change them), the relationships are what counts."""
        self.__dict__["_access"] = (frozenset(filter(None, (stored_roles or "").split(","))), studio_id)

    @property
    def role_names(self) -> set[str]:
        access = self.__dict__.get("_access")
        if access is not None and "roles" not in self.__dict__ and "membership" not in self.__dict__:
            names = set(access[0])
            if access[1] is not None:
                names.add(Role.STUDIO.value)
            return names
        names = {r.role for r in self.roles}
        if self.membership is not None:
            names.add(Role.STUDIO.value)
        return names

    def has_role(self, *roles: str) -> bool:
        return bool(self.role_names.intersection(roles))

    @property
    def studio_id(self) -> int | None:
        access = self.__dict__.get("_access")
        if access is not None and "membership" not in self.__dict__:
            return access[1]
        return self.membership.studio_id if self.membership else None


class UserRole(Base):
    __tablename__ = "user_roles"
    __table_args__ = (CheckConstraint("role IN ('fan', 'finance', 'admin')", name="role"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="roles")


class Studio(Base):
    __tablename__ = "studios"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    members: Mapped[list[StudioMember]] = relationship(back_populates="studio")


class StudioMember(Base):
    """A user works for one studio; membership is what makes them "studio"."""

    __tablename__ = "studio_members"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    studio_id: Mapped[int] = mapped_column(ForeignKey("studios.id"), index=True)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="membership")
    studio: Mapped[Studio] = relationship(back_populates="members", lazy="joined")


class RememberToken(Base):
    """A "keep me logged in" cookie: random, kept only as its SHA-256, valid
    until expires_at (set at log-in, not extended), replaced by a new one each
    time it logs a browser in. It also stops working when the user's
    session_version changes (log-out, password reset, role change)."""

    __tablename__ = "remember_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The user's session_version when the token was issued.
    session_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: When a successor was issued; the token is still accepted for a few
    #: seconds after (parallel requests of one browser), then never.
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

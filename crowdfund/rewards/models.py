"""Reward tiers, screenings, tickets and the check-in log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crowdfund.accounts.models import User
from crowdfund.db import Base, UTCDateTime, utcnow
from crowdfund.films.models import Film


class TicketStatus(StrEnum):
    ISSUED = "issued"
    BOOKED = "booked"
    REDEEMED = "redeemed"
    VOID = "void"


class CheckInResult(StrEnum):
    ADMITTED = "admitted"
    ALREADY_USED = "already_used"
    OTHER_FILM = "other_film"
    OTHER_SCREENING = "other_screening"
    NOT_BOOKED = "not_booked"
    VOID = "void"
    UNKNOWN = "unknown"


class RewardTier(Base):
    """ "`min_stakes` paid stakes or more give `tickets` screening tickets and `extras`."
    Set while the film is a draft; frozen with the terms."""

    __tablename__ = "reward_tiers"
    __table_args__ = (
        CheckConstraint("min_stakes > 0", name="min_stakes"),
        CheckConstraint("tickets >= 0", name="tickets"),
        UniqueConstraint("film_id", "min_stakes", name="uq_reward_tiers_film_min_stakes"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id", ondelete="CASCADE"))
    min_stakes: Mapped[int] = mapped_column(Integer)
    tickets: Mapped[int] = mapped_column(Integer)
    extras: Mapped[str] = mapped_column(Text, default="")


class Screening(Base):
    """A showing of a funded film. `booked` is the seat counter every booking
    moves with one conditional statement (see rewards/bookings.py)."""

    __tablename__ = "screenings"
    __table_args__ = (
        CheckConstraint("seats > 0", name="seats"),
        CheckConstraint("booked >= 0 AND booked <= seats", name="booked_within_seats"),
        Index("ix_screenings_film_starts_at", "film_id", "starts_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id", ondelete="CASCADE"))
    cinema: Mapped[str] = mapped_column(String(120))
    city: Mapped[str] = mapped_column(String(80))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seats: Mapped[int] = mapped_column(Integer)
    booked: Mapped[int] = mapped_column(Integer, default=0)
    #: Only backers who reached this tier may book (premieres); None: any ticket.
    min_tier_id: Mapped[int | None] = mapped_column(ForeignKey("reward_tiers.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    film: Mapped[Film] = relationship()
    min_tier: Mapped[RewardTier | None] = relationship(lazy="joined")

    @property
    def seats_left(self) -> int:
        return self.seats - self.booked


class Ticket(Base):
    """One admission. The code is the secret the door checks: random, never
    derived from ids. Status and screening agree (CHECK below)."""

    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint("status IN ('issued', 'booked', 'redeemed', 'void')", name="status"),
        CheckConstraint(
            "(status IN ('issued', 'void') AND screening_id IS NULL)"
            " OR (status IN ('booked', 'redeemed') AND screening_id IS NOT NULL)",
            name="status_screening",
        ),
        CheckConstraint("(status = 'redeemed') = (redeemed_at IS NOT NULL)", name="redeemed_at"),
        Index("ix_tickets_film_user_status", "film_id", "user_id", "status"),
        Index("ix_tickets_screening_status", "screening_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=TicketStatus.ISSUED.value)
    screening_id: Mapped[int | None] = mapped_column(ForeignKey("screenings.id"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    booked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    redeemed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    film: Mapped[Film] = relationship()
    screening: Mapped[Screening | None] = relationship()
    user: Mapped[User] = relationship(foreign_keys=[user_id])


class CheckInAttempt(Base):
    """Every code presented at a door, admitted or not: who, when, which screening."""

    __tablename__ = "check_in_attempts"
    __table_args__ = (
        CheckConstraint(
            "result IN ('admitted', 'already_used', 'other_film', 'other_screening', 'not_booked',"
            " 'void', 'unknown')",
            name="result",
        ),
        Index("ix_check_in_attempts_screening_at", "screening_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    screening_id: Mapped[int] = mapped_column(ForeignKey("screenings.id", ondelete="CASCADE"))
    staff_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: As presented (normalised, cut to 40 characters): made-up codes are logged too.
    code: Mapped[str] = mapped_column(String(40))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    result: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    staff: Mapped[User] = relationship()

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crowdfund.accounts.models import Studio, User
from crowdfund.db import Base, UTCDateTime, utcnow
from crowdfund.films.states import FilmState


class Film(Base):
    __tablename__ = "films"
    __table_args__ = (
        CheckConstraint("funding_goal_cents > 0", name="goal_positive"),
        CheckConstraint("stake_price_cents > 0", name="price_positive"),
        CheckConstraint("stake_cap > 0", name="cap_positive"),
        CheckConstraint("per_backer_limit > 0 AND per_backer_limit <= stake_cap", name="per_backer_limit"),
        CheckConstraint("recoup_share_bps BETWEEN 0 AND 10000", name="recoup_share"),
        CheckConstraint("recoup_multiple_bps BETWEEN 0 AND 100000", name="recoup_multiple"),
        CheckConstraint("profit_share_bps BETWEEN 0 AND 10000", name="profit_share"),
        CheckConstraint(
            "state IN ('draft', 'in_review', 'funding', 'funded', 'failed', 'released',"
            " 'closed', 'cancelled')",
            name="state",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    studio_id: Mapped[int] = mapped_column(ForeignKey("studios.id"), index=True)
    #: URL name, unique; fixed at creation so links keep working.
    slug: Mapped[str] = mapped_column(String(140), unique=True)
    title: Mapped[str] = mapped_column(String(120))
    logline: Mapped[str] = mapped_column(String(200))
    synopsis: Mapped[str] = mapped_column(Text)
    #: The studio's own statement of risks, shown beside the platform's.
    risks: Mapped[str] = mapped_column(Text, default="")
    poster_id: Mapped[int | None] = mapped_column(ForeignKey("stored_files.id"))

    funding_goal_cents: Mapped[int] = mapped_column(BigInteger)
    stake_price_cents: Mapped[int] = mapped_column(Integer, default=5000)
    #: Hard cap: stakes sold plus held never exceed it.
    stake_cap: Mapped[int] = mapped_column(Integer)
    per_backer_limit: Mapped[int] = mapped_column(Integer)
    #: End of funding, stored in UTC; shown in `timezone` and the viewer's zone.
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    expected_release_date: Mapped[date] = mapped_column(Date)

    #: Payout terms (docs/architecture.md "Payout waterfall"), frozen when funding opens.
    recoup_share_bps: Mapped[int] = mapped_column(Integer)
    recoup_multiple_bps: Mapped[int] = mapped_column(Integer)
    profit_share_bps: Mapped[int] = mapped_column(Integer)

    state: Mapped[str] = mapped_column(String(16), default=FilmState.DRAFT.value, index=True)
    #: Why an admin sent the draft back; shown to the studio.
    review_note: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: When funding opened and the terms were frozen.
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    studio: Mapped[Studio] = relationship(lazy="joined", innerjoin=True)
    events: Mapped[list[FilmEvent]] = relationship(
        back_populates="film", order_by="FilmEvent.id", lazy="select"
    )

    @property
    def max_raise_cents(self) -> int:
        return self.stake_cap * self.stake_price_cents


class FilmEvent(Base):
    """One row per state change of a film: who moved it, when and why."""

    __tablename__ = "film_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    film: Mapped[Film] = relationship(back_populates="events")
    actor: Mapped[User | None] = relationship()

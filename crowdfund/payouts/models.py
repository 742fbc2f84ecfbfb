from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crowdfund.accounts.models import User
from crowdfund.db import Base, UTCDateTime
from crowdfund.films.models import Film


class ReportStatus(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


class RunStatus(StrEnum):
    COMPUTING = "computing"
    COMPUTED = "computed"
    PAID = "paid"


class BoxOfficeReport(Base):
    """A studio's net box-office receipts for one period. Approved reports never
    change: a correction is a new (possibly negative) adjusting report that
    names the approved report it corrects. Periods of a film's submitted and
    approved reports never overlap, except a correction with the report it
    corrects and that report's other corrections (see services.file_report)."""

    __tablename__ = "box_office_reports"
    __table_args__ = (
        CheckConstraint("period_end >= period_start", name="period"),
        CheckConstraint("status IN ('submitted', 'approved', 'rejected')", name="status"),
        Index("ix_box_office_reports_film_status", "film_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id"))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    #: Net receipts in cents; negative for a correction of earlier reports.
    net_receipts_cents: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    file_id: Mapped[int | None] = mapped_column(ForeignKey("stored_files.id"))
    status: Mapped[str] = mapped_column(String(16), default=ReportStatus.SUBMITTED.value)
    filed_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    filed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    #: The approved original report this one corrects (never itself a correction).
    corrects_report_id: Mapped[int | None] = mapped_column(ForeignKey("box_office_reports.id"))

    film: Mapped[Film] = relationship(lazy="joined", innerjoin=True)
    filed_by: Mapped[User] = relationship(foreign_keys=[filed_by_id])
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])


class PayoutRun(Base):
    """The payout of one approved report: the waterfall's figures, frozen, and
    the progress of writing its statements (resumable)."""

    __tablename__ = "payout_runs"
    __table_args__ = (
        CheckConstraint("pool_cents = tier1_cents + tier2_cents", name="pool"),
        CheckConstraint("pool_cents >= 0 AND carried_in_cents <= 0 AND carry_out_cents <= 0", name="signs"),
        CheckConstraint("status IN ('computing', 'computed', 'paid')", name="status"),
        Index("ix_payout_runs_film_id_sequence", "film_id", "sequence", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("box_office_reports.id"), unique=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id"))
    #: 1, 2, 3 ... per film, in the order the reports were approved.
    sequence: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.COMPUTING.value)
    started_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    computed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reported_cents: Mapped[int] = mapped_column(BigInteger)
    carried_in_cents: Mapped[int] = mapped_column(BigInteger)
    receipts_cents: Mapped[int] = mapped_column(BigInteger)
    carry_out_cents: Mapped[int] = mapped_column(BigInteger)
    principal_cents: Mapped[int] = mapped_column(BigInteger)
    target_cents: Mapped[int] = mapped_column(BigInteger)
    already_paid_cents: Mapped[int] = mapped_column(BigInteger)
    tier1_cents: Mapped[int] = mapped_column(BigInteger)
    receipts_used_by_tier1_cents: Mapped[int] = mapped_column(BigInteger)
    tier2_cents: Mapped[int] = mapped_column(BigInteger)
    pool_cents: Mapped[int] = mapped_column(BigInteger)
    #: Paid stakes over which the pool is split.
    total_stakes: Mapped[int] = mapped_column(BigInteger)
    backers: Mapped[int] = mapped_column(Integer)
    #: Resume point: statements exist for every backer up to this position.
    statements_written: Mapped[int] = mapped_column(Integer, default=0)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paid_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    bank_reference: Mapped[str | None] = mapped_column(String(120))

    report: Mapped[BoxOfficeReport] = relationship(lazy="joined", innerjoin=True)
    film: Mapped[Film] = relationship(lazy="joined", innerjoin=True)

    @property
    def payment_status(self) -> str:
        """What every statement of the run says of its money (page, PDF, e-mail, list, exports):
        computed is not paid; only finance marking the run paid makes it "paid on <date>"."""
        if self.status == RunStatus.PAID and self.paid_at is not None:
            return f"paid on {self.paid_at.date().isoformat()}"
        return "computed (not yet paid)"


class PayoutStatement(Base):
    """One backer's share of one run."""

    __tablename__ = "payout_statements"
    __table_args__ = (
        UniqueConstraint("run_id", "user_id", name="uq_payout_statements_run_user"),
        UniqueConstraint("run_id", "position", name="uq_payout_statements_run_position"),
        CheckConstraint("amount_cents >= 0 AND stakes > 0", name="amounts"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Printed on the statement, the PDF and the exports.
    number: Mapped[str] = mapped_column(String(32), unique=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("payout_runs.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    #: Place in the split (backers ordered by user id); ties in rounding go to the earlier one.
    position: Mapped[int] = mapped_column(Integer)
    stakes: Mapped[int] = mapped_column(BigInteger)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    #: Everything this backer has been paid for the film, this statement included.
    cumulative_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    run: Mapped[PayoutRun] = relationship(lazy="joined", innerjoin=True)
    user: Mapped[User] = relationship()

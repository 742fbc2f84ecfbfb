"""Double-entry journal. `post()` refuses an entry whose lines do not sum to zero.

Signs: a positive amount is a debit, a negative one a credit. Accounts:

- `backer_cash`: money held at Stripe (an asset: debit when a charge is
  captured, credit when Stripe has refunded it).
- `escrow:<film>`: what backers paid for a film until it is funded or refunded.
- `refunds_payable:<film>`: refunds decided and not yet confirmed by Stripe
  (DESIGN.md lists no such account; without it the ledger would claim money
  left Stripe before Stripe said so).
- `studio:<studio>`: what the platform owes a studio after its film is funded.
- `platform_fees`: the platform's fee income.
- `payouts_payable:<film>`, `paid_out`: backers' box-office payouts.
- `unmatched_payments`: money that arrived at Stripe for no order (a payment
  anomaly: debit `backer_cash`, credit this), owed back to the payer until
  Stripe has refunded it (debit this, credit `backer_cash`).

Each entry has a unique `key` naming the movement (for example
`payment:<order>`), so the same movement can never be booked twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from crowdfund.db import Base, UTCDateTime


class UnbalancedEntry(ValueError):
    pass


class JournalEntry(Base):
    __tablename__ = "journal_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Names the movement; unique so a retried step cannot book it twice.
    key: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    film_id: Mapped[int | None] = mapped_column(ForeignKey("films.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    memo: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    lines: Mapped[list[JournalLine]] = relationship(
        back_populates="entry", cascade="all, delete-orphan", lazy="selectin"
    )


class JournalLine(Base):
    __tablename__ = "journal_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entries.id"), index=True)
    account: Mapped[str] = mapped_column(String(64), index=True)
    #: Debit positive, credit negative, in cents.
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    line_no: Mapped[int] = mapped_column(Integer, default=0)

    entry: Mapped[JournalEntry] = relationship(back_populates="lines")


def escrow(film_id: int) -> str:
    return f"escrow:{film_id}"


def refunds_payable(film_id: int) -> str:
    return f"refunds_payable:{film_id}"


def studio(studio_id: int) -> str:
    return f"studio:{studio_id}"


BACKER_CASH = "backer_cash"
PLATFORM_FEES = "platform_fees"
UNMATCHED_PAYMENTS = "unmatched_payments"


def post(
    session: Session,
    *,
    key: str,
    kind: str,
    lines: Sequence[tuple[str, int]],
    now: datetime,
    film_id: int | None = None,
    order_id: int | None = None,
    memo: str = "",
) -> JournalEntry:
    """Book one balanced entry in the caller's transaction."""
    if not lines:
        raise UnbalancedEntry("an entry needs lines")
    if sum(amount for _, amount in lines) != 0:
        raise UnbalancedEntry(f"entry {key} does not balance: {list(lines)}")
    entry = JournalEntry(key=key, kind=kind, film_id=film_id, order_id=order_id, memo=memo, created_at=now)
    entry.lines = [
        JournalLine(account=account, amount_cents=amount, line_no=n)
        for n, (account, amount) in enumerate(lines)
        if amount != 0
    ]
    session.add(entry)
    session.flush()
    return entry


def has_entry(session: Session, key: str) -> bool:
    return session.scalar(select(JournalEntry.id).where(JournalEntry.key == key)) is not None


def balance(session: Session, account: str) -> int:
    """Debits minus credits of one account."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(JournalLine.amount_cents), 0)).where(JournalLine.account == account)
        )
        or 0
    )


def total_by_kind(session: Session, film_id: int, kind: str, account: str) -> int:
    """Sum of one account's lines in entries of one kind for a film."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(JournalLine.amount_cents), 0))
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .where(JournalEntry.film_id == film_id, JournalEntry.kind == kind, JournalLine.account == account)
        )
        or 0
    )


def trial_balance(session: Session) -> int:
    """Sum of every line; zero when the ledger is balanced."""
    return int(session.scalar(select(func.coalesce(func.sum(JournalLine.amount_cents), 0))) or 0)

"""Double-entry journal. `post()` refuses an entry whose lines do not sum to zero.

Signs: a positive amount is a debit, a negative one a credit. Accounts:

- `backer_cash`: money held at Stripe (an asset: debit when a charge is
  captured, credit when Stripe has refunded it).
- `escrow:<film>`: what backers paid for a film until it is funded or refunded.
- `refunds_payable:<film>`: refunds decided and not yet confirmed by Stripe
  (kept apart from escrow: without it the ledger would claim money left
  Stripe before Stripe said so).
- `studio:<studio>`: what the platform owes a studio after its film is funded.
- `platform_fees`: the platform's fee income.
- `payouts_payable:<film>`, `paid_out`: backers' box-office payouts.
- `unmatched_payments`: money that arrived at Stripe for no order (a payment
  anomaly: debit `backer_cash`, credit this), owed back to the payer until
  Stripe has refunded it (debit this, credit `backer_cash`).
- `backer_balance:<user>`, `withdrawals_in_flight`: the backer balances and
  withdrawals planned in docs/architecture.md; builders only, nothing posts
  to them yet.

Each entry has a unique `key` naming the movement (for example
`payment:<order>`), so the same movement can never be booked twice.

Kinds, keys and account names are built only by `EntryKind` and `Account`
below, never formatted by a caller: their strings are stored data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

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


class EntryKind(StrEnum):
    """What an entry records. The values are stored in `journal_entries.kind`
    and in each entry's key, and appear in the ledger export: never rename
    one (tests/unit/test_ledger_names.py pins them)."""

    #: A captured charge (subject: the order): backer_cash to escrow:<film>.
    PAYMENT = "payment"
    #: A refund decided (subject: the order): escrow:<film> to refunds_payable:<film>.
    REFUND_DECIDED = "refund_decided"
    #: A refund Stripe confirmed (subject: the order): refunds_payable:<film> to backer_cash.
    REFUND = "refund"
    #: A funded round (subject: the film): escrow to studio:<studio> and platform_fees.
    ESCROW_RELEASE = "escrow_release"
    #: A payout run's pool (subject: the run): studio:<studio> to payouts_payable:<film>.
    PAYOUT_POOL = "payout_pool"
    #: A payout run paid (subject: the run): payouts_payable:<film> to paid_out.
    PAYOUT_PAID = "payout_paid"
    #: Money at Stripe for no order (subject: the anomaly): backer_cash to unmatched_payments.
    UNMATCHED_PAYMENT = "unmatched_payment"
    #: That money refunded (subject: the anomaly): unmatched_payments to backer_cash.
    UNMATCHED_REFUND = "unmatched_refund"

    @property
    def key_prefix(self) -> str:
        """The start of every key of this kind: "refund_decided" -> "refund-decided:"."""
        return self.value.replace("_", "-") + ":"

    def key(self, subject_id: int) -> str:
        """The unique key of this kind's movement for one subject:
        `EntryKind.PAYMENT.key(12)` -> "payment:12"."""
        return f"{self.key_prefix}{int(subject_id)}"


class Account(StrEnum):
    """Account names. The fixed accounts are members; the per-film, per-studio
    and per-user ones are built by the static methods. The names are stored in
    `journal_lines.account`: never rename one."""

    BACKER_CASH = "backer_cash"
    PLATFORM_FEES = "platform_fees"
    UNMATCHED_PAYMENTS = "unmatched_payments"
    PAID_OUT = "paid_out"
    #: Backers' withdrawals sent to the bank and not yet settled (not used yet).
    WITHDRAWALS_IN_FLIGHT = "withdrawals_in_flight"

    @staticmethod
    def escrow(film_id: int) -> str:
        return f"escrow:{int(film_id)}"

    @staticmethod
    def refunds_payable(film_id: int) -> str:
        return f"refunds_payable:{int(film_id)}"

    @staticmethod
    def payouts_payable(film_id: int) -> str:
        return f"payouts_payable:{int(film_id)}"

    @staticmethod
    def studio(studio_id: int) -> str:
        return f"studio:{int(studio_id)}"

    @staticmethod
    def backer_balance(user_id: int) -> str:
        """A backer's paid statements, spent on stakes or withdrawn (not used yet)."""
        return f"backer_balance:{int(user_id)}"


#: The prefixes of the accounts built per film, studio or user: "<prefix>:<id>".
_SUBJECT_ACCOUNTS = frozenset({"escrow", "refunds_payable", "payouts_payable", "studio", "backer_balance"})
_FIXED_ACCOUNTS = frozenset(a.value for a in Account)


def is_account(name: str) -> bool:
    """Whether `name` is an account an `Account` builder makes."""
    if name in _FIXED_ACCOUNTS:
        return True
    prefix, colon, subject = name.partition(":")
    return bool(colon) and prefix in _SUBJECT_ACCOUNTS and subject.isascii() and subject.isdigit()


def post(
    session: Session,
    *,
    key: str,
    kind: EntryKind,
    lines: Sequence[tuple[str, int]],
    now: datetime,
    film_id: int | None = None,
    order_id: int | None = None,
    memo: str = "",
) -> JournalEntry:
    """Book one balanced entry in the caller's transaction. `key` is built by
    `kind.key(...)`; every account by `Account`."""
    if not isinstance(kind, EntryKind):
        raise ValueError(f"not an entry kind: {kind!r}")
    if not key.startswith(kind.key_prefix):
        raise ValueError(f"key {key!r} is not a {kind.value} key")
    unknown = [account for account, _ in lines if not is_account(account)]
    if unknown:
        raise ValueError(f"not an account: {unknown}")
    if not lines:
        raise UnbalancedEntry("an entry needs lines")
    if sum(amount for _, amount in lines) != 0:
        raise UnbalancedEntry(f"entry {key} does not balance: {list(lines)}")
    entry = JournalEntry(
        key=key, kind=kind.value, film_id=film_id, order_id=order_id, memo=memo, created_at=now
    )
    entry.lines = [
        JournalLine(account=str(account), amount_cents=amount, line_no=n)
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


def total_by_kind(session: Session, film_id: int, kind: EntryKind, account: str) -> int:
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

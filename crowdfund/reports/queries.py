"""Finance figures derived from the ledger, checked against the orders. Read only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import String, cast, func, literal, select
from sqlalchemy.orm import Session, aliased

from crowdfund import ledger
from crowdfund.accounts.models import User
from crowdfund.films.models import Film
from crowdfund.funding.models import Order, OrderStatus, RefundState
from crowdfund.funding.queries import paid_orders_of, paid_total
from crowdfund.ledger import Account, EntryKind, JournalEntry
from crowdfund.payouts.models import PayoutRun, PayoutStatement


@dataclass
class FilmMoney:
    captured: int = 0
    refunded: int = 0
    refunds_pending: int = 0
    released: int = 0
    fees: int = 0
    in_escrow: int = 0
    pools: int = 0
    statements: int = 0
    payouts_paid: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def to_studio(self) -> int:
        return self.released - self.fees


def _orders_sum(session: Session, film_id: int, statuses: tuple[OrderStatus, ...]) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(Order.amount_cents), 0)).where(
                Order.film_id == film_id, Order.status.in_([s.value for s in statuses])
            )
        )
        or 0
    )


def _orders_missing_entry(
    session: Session,
    film_id: int,
    statuses: tuple[OrderStatus, ...],
    kind: EntryKind,
    refund_done: bool = False,
) -> list[str]:
    entry = aliased(JournalEntry)
    statement = (
        select(Order.reference)
        .outerjoin(entry, entry.key == literal(kind.key_prefix, String) + cast(Order.id, String))
        .where(Order.film_id == film_id, Order.status.in_([s.value for s in statuses]), entry.id.is_(None))
        .order_by(Order.id)
        .limit(50)
    )
    if refund_done:
        statement = statement.where(Order.refund_state == RefundState.DONE)
    return list(session.scalars(statement))


def film_money(session: Session, film: Film) -> FilmMoney:
    money = FilmMoney(
        captured=ledger.total_by_kind(session, film.id, EntryKind.PAYMENT, Account.BACKER_CASH),
        refunded=-ledger.total_by_kind(session, film.id, EntryKind.REFUND, Account.BACKER_CASH),
        refunds_pending=-ledger.balance(session, Account.refunds_payable(film.id)),
        released=ledger.total_by_kind(session, film.id, EntryKind.ESCROW_RELEASE, Account.escrow(film.id)),
        fees=-ledger.total_by_kind(session, film.id, EntryKind.ESCROW_RELEASE, Account.PLATFORM_FEES),
        in_escrow=-ledger.balance(session, Account.escrow(film.id)),
    )
    ever_paid = _orders_sum(session, film.id, (OrderStatus.PAID, OrderStatus.CANCELLED, OrderStatus.REFUNDED))
    still_paid = paid_total(session, film.id)
    if money.captured != ever_paid:
        money.problems.append(
            f"Captured in the ledger ({money.captured} cents) differs from paid, cancelled and refunded orders "
            f"({ever_paid} cents)."
        )
    if money.captured - money.refunded - money.refunds_pending != money.in_escrow + money.released:
        money.problems.append("Captured - refunded - refunds pending differs from escrow + released.")
    # Escrow holds what paid orders paid until the round is decided; a funded
    # round releases it all, a failed one refunds it order by order.
    expected_escrow = still_paid if film.state in ("funding", "failed", "cancelled") else 0
    if money.in_escrow != expected_escrow:
        money.problems.append(
            f"In escrow ({money.in_escrow} cents) differs from paid orders ({expected_escrow} cents)."
        )
    _check_payouts(session, film, money)
    for reference in _orders_missing_entry(session, film.id, (OrderStatus.PAID,), EntryKind.PAYMENT):
        money.problems.append(f"Order {reference} is paid but has no payment entry.")
    for reference in _orders_missing_entry(
        session, film.id, (OrderStatus.CANCELLED, OrderStatus.REFUNDED), EntryKind.REFUND, refund_done=True
    ):
        money.problems.append(f"Order {reference} is refunded but has no refund entry.")
    return money


def raised_by_day(session: Session, film_id: int) -> list[tuple[date, int]]:
    """Cumulative paid amount per day (paid orders that stayed paid)."""
    day = func.date(Order.paid_at)
    rows = session.execute(
        select(day, func.sum(Order.amount_cents)).where(paid_orders_of(film_id)).group_by(day).order_by(day)
    ).all()
    total, points = 0, []
    for when, amount in rows:
        total += int(amount)
        points.append((date.fromisoformat(str(when)[:10]), total))
    return points


def backer_rows(
    session: Session, film_id: int, batch_size: int = 1000
) -> Iterator[tuple[str, str, int, int]]:
    """(name, e-mail, paid stakes, paid cents) per backer, streamed."""
    statement = (
        select(User.display_name, User.email, func.sum(Order.units), func.sum(Order.amount_cents))
        .join(User, User.id == Order.user_id)
        .where(paid_orders_of(film_id))
        .group_by(User.id, User.display_name, User.email)
        .order_by(User.id)
        .execution_options(yield_per=batch_size)
    )
    for name, email, units, cents in session.execute(statement):
        yield name, email, int(units), int(cents)


def _check_payouts(session: Session, film: Film, money: FilmMoney) -> None:
    runs = session.execute(
        select(
            PayoutRun.id,
            PayoutRun.sequence,
            PayoutRun.status,
            PayoutRun.pool_cents,
            func.coalesce(func.sum(PayoutStatement.amount_cents), 0),
        )
        .outerjoin(PayoutStatement, PayoutStatement.run_id == PayoutRun.id)
        .where(PayoutRun.film_id == film.id)
        .group_by(PayoutRun.id, PayoutRun.sequence, PayoutRun.status, PayoutRun.pool_cents)
        .order_by(PayoutRun.sequence)
    ).all()
    money.pools = sum(int(r.pool_cents) for r in runs)
    money.statements = sum(int(r[4]) for r in runs)
    payable = Account.payouts_payable(film.id)
    money.payouts_paid = ledger.total_by_kind(session, film.id, EntryKind.PAYOUT_PAID, payable)
    for _run_id, sequence, status, pool, written in runs:
        if status != "computing" and int(written) != int(pool):
            money.problems.append(
                f"Payout run {sequence}: statements sum to {int(written)} cents, the pool is {int(pool)}."
            )
    booked_pools = -ledger.total_by_kind(session, film.id, EntryKind.PAYOUT_POOL, payable)
    if booked_pools != money.pools:
        money.problems.append(
            f"Pools booked in the ledger ({booked_pools} cents) differ from the runs ({money.pools})."
        )
    paid_runs = sum(int(r.pool_cents) for r in runs if r.status == "paid")
    if money.payouts_paid != paid_runs:
        money.problems.append(
            f"Payouts marked paid in the ledger ({money.payouts_paid}) differ from paid runs ({paid_runs})."
        )


def reconciliation(session: Session) -> list[tuple[Film, FilmMoney]]:
    films = session.scalars(select(Film).where(Film.state.not_in(("draft", "in_review"))).order_by(Film.id))
    return [(film, film_money(session, film)) for film in films]

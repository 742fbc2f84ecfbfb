"""Asking for work: the outbox rows that start the workers' tasks
(crowdfund/workflows/tasks.py), each written in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdfund.funding.models import Order
from crowdfund.funding.queries import paid_orders_of
from crowdfund.outbox.tasks import OutboxTask, TaskStatus, enqueue
from crowdfund.payouts.models import PayoutRun

CLOSE_FILM = "round.close_film"
DECIDE_REFUNDS = "refunds.decide"
REFUND_BATCH = "refunds.batch"
REFUND_ORDER = "refunds.order"
REFUND_ANOMALY = "refunds.anomaly"
ISSUE_TICKETS = "tickets.issue"
WRITE_STATEMENTS = "payouts.write"
ANNOUNCE_STATEMENTS = "payouts.announce"
FUNDED_MAIL = "mail.funded"


# --- what asks for the work ---


def schedule_round_close(session: Session, film_ids: list[int], *, now: datetime) -> int:
    """One round.close_film row per film (committed by the caller): the
    periodic job fans out, and workers decide the films in parallel."""
    return sum(
        enqueue(session, CLOSE_FILM, f"close-film:{film_id}", now=now, film_id=film_id)
        for film_id in film_ids
    )


def schedule_refunds(session: Session, film_id: int, *, now: datetime, batch_size: int = 500) -> int:
    """Decide a failed or cancelled film's refunds: one refunds.decide row per
    `batch_size` paid orders (ranges of order ids fixed now), so that workers
    decide the batches in parallel. Returns the rows written; none while
    rows of an earlier plan are still under way (a film that still owes
    refunds after its plan finished, a late charge say, gets a new plan)."""
    under_way = session.scalar(
        select(func.count())
        .select_from(OutboxTask)
        .where(
            OutboxTask.kind == DECIDE_REFUNDS,
            OutboxTask.key.startswith(f"refunds-decide:{film_id}:"),
            OutboxTask.status.in_((TaskStatus.PENDING, TaskStatus.RUNNING)),
        )
    )
    if under_way:
        return 0
    numbered = (
        select(Order.id, func.row_number().over(order_by=Order.id).label("n"))
        .where(paid_orders_of(film_id))
        .subquery()
    )
    ends = list(
        session.scalars(select(numbered.c.id).where(numbered.c.n % batch_size == 0).order_by(numbered.c.id))
    )
    last_owed = session.scalar(select(func.max(Order.id)).where(paid_orders_of(film_id)))
    if last_owed is None:
        return 0
    if not ends or ends[-1] != last_owed:
        ends.append(last_owed)
    plan, after_id, written = now.isoformat(), 0, 0
    for last_id in ends:
        written += enqueue(
            session,
            DECIDE_REFUNDS,
            f"refunds-decide:{film_id}:{after_id}:{plan}",
            now=now,
            film_id=film_id,
            after_id=after_id,
            last_id=last_id,
        )
        after_id = last_id
    return written


def schedule_funded_follow_ups(session: Session, film_id: int, *, now: datetime) -> None:
    """A funded film's tickets and its backers' e-mails, by workers in batches outside its lock."""
    enqueue(session, ISSUE_TICKETS, f"tickets:{film_id}:0", now=now, film_id=film_id, after_user_id=0)
    enqueue(session, FUNDED_MAIL, f"funded-mail:{film_id}:0", now=now, film_id=film_id, after_user_id=0)


def schedule_order_refund(session: Session, order: Order, *, now: datetime) -> bool:
    """A backer's cancelled order: its refund carried out by a worker."""
    return enqueue(session, REFUND_ORDER, f"refund-order:{order.id}", now=now, order_id=order.id)


def schedule_anomaly_refund(session: Session, anomaly_id: int, *, now: datetime) -> bool:
    """Money that matched no order: refunded in full by a worker."""
    return enqueue(session, REFUND_ANOMALY, f"refund-anomaly:{anomaly_id}", now=now, anomaly_id=anomaly_id)


def schedule_statements(session: Session, run: PayoutRun, *, now: datetime) -> bool:
    """A payout run's statements, written by workers batch by batch."""
    return enqueue(
        session,
        WRITE_STATEMENTS,
        f"statements:{run.id}:{run.statements_written}",
        now=now,
        run_id=run.id,
    )

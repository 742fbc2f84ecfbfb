"""Round close: films past their deadline become funded or failed.

`close_rounds()` is run by a scheduler (`flask funding close-rounds`).

Transactions: this job owns them (a workflow, crowdfund/workflows/): each
step commits on its own (a film's decision; each batch of a film's refund
decisions), and refunds are carried out at Stripe by
crowdfund/workflows/refunds.py, which commits before and after each call to
Stripe. The domains it calls only flush. Reactions of other domains go
through crowdfund/workflows/reactions.py (refunded orders void tickets); a
funded film releases its escrow and issues its tickets here.

Each step commits on its own, so a crash loses at most the step in progress, and a
failure is isolated to its unit (crowdfund/jobs.py): a film whose decision
raises is rolled back alone and left for the next run, an order whose refund
decision raises is rolled back alone (a savepoint); both are reported in
`CloseReport.failures` and the command exits non-zero. A
second run carries on where the first stopped: films already decided are not
decided again, orders already refunded are skipped, and refunds already made
at Stripe are found there rather than made twice. Orders are read in batches
of ids, never all at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund import ledger
from crowdfund.films.models import Film
from crowdfund.films.services import cancellation, change_film_state
from crowdfund.films.states import FilmState
from crowdfund.funding.inventory import adjust, release_expired_holds
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.funding.notices import queue_funded_emails
from crowdfund.funding.queries import paid_orders_of, paid_total
from crowdfund.funding.rules import fee_split, goal_met, round_closes_at
from crowdfund.jobs import UnitFailure, in_own_transaction, in_savepoint
from crowdfund.ledger import Account, EntryKind
from crowdfund.mail.outbox import queue_email
from crowdfund.payments.gateway import StripeGateway
from crowdfund.rewards.tickets import issue_tickets
from crowdfund.workflows.reactions import refund_paid_order
from crowdfund.workflows.refunds import process_refunds
from crowdfund.workflows.task_requests import schedule_funded_follow_ups


@dataclass
class CloseReport:
    funded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    refunds_decided: int = 0
    refunds_made: int = 0
    failures: list[UnitFailure] = field(default_factory=list)


def films_due(session: Session, now: datetime, hold_window: timedelta) -> list[int]:
    # Every hold taken before the deadline has lapsed or been paid by deadline + window.
    return list(
        session.scalars(
            select(Film.id)
            .where(Film.state == FilmState.FUNDING, Film.deadline <= now - hold_window)
            .order_by(Film.deadline, Film.id)
        )
    )


def decide_film(
    session: Session, film_id: int, *, now: datetime, hold_window: timedelta, fee_bps: int
) -> str:
    """Decide one film in the caller's transaction: "funded", "failed" or "skipped"."""
    film = session.scalar(select(Film).where(Film.id == film_id).with_for_update(of=Film))
    if film is None or film.state != FilmState.FUNDING or now < round_closes_at(film.deadline, hold_window):
        return "skipped"
    release_expired_holds(session, film.id, now)
    raised = paid_total(session, film.id)
    if goal_met(raised, film.funding_goal_cents):
        change_film_state(session, film, FilmState.FUNDED, now=now, reason="goal met")
        in_escrow = -ledger.balance(session, Account.escrow(film.id))
        to_studio, fee = fee_split(in_escrow, fee_bps)
        ledger.post(
            session,
            key=EntryKind.ESCROW_RELEASE.key(film.id),
            kind=EntryKind.ESCROW_RELEASE,
            lines=[
                (Account.escrow(film.id), in_escrow),
                (Account.studio(film.studio_id), -to_studio),
                (Account.PLATFORM_FEES, -fee),
            ],
            now=now,
            film_id=film.id,
            memo=f"{film.title} funded: escrow released less {fee_bps} bps fee",
        )
        # Issued by workers in batches, outside this lock (crowdfund/workflows/tasks.py).
        schedule_funded_follow_ups(session, film.id, now=now)
        return "funded"
    change_film_state(session, film, FilmState.FAILED, now=now, reason="goal not met by the deadline")
    return "failed"


def decide_refunds(
    session: Session,
    film_id: int,
    *,
    now: datetime,
    batch_size: int,
    failures: list[UnitFailure] | None = None,
) -> int:
    """Every paid order of a failed or cancelled film is refunded (decided
    here, carried out by process_refunds), batch after batch, each committed."""
    decided, after_id = 0, 0
    while (
        batch := decide_refund_batch(
            session, film_id, after_id=after_id, now=now, batch_size=batch_size, failures=failures
        )
    ) is not None:
        count, after_id = batch
        decided += count
        session.commit()
        session.expunge_all()
    return decided


def decide_refund_batch(
    session: Session,
    film_id: int,
    *,
    after_id: int,
    now: datetime,
    batch_size: int,
    failures: list[UnitFailure] | None = None,
    last_id: int | None = None,
) -> tuple[int, int] | None:
    """Decide the refunds of the next `batch_size` paid orders after order
    `after_id` of a failed or cancelled film, in the caller's transaction;
    each backer is told once, with the film's real reason. An order whose
    decision raises is rolled back alone (a savepoint), added to `failures`
    (raised if None) and left paid for a later run. Returns (refunds decided,
    the batch's last order id), or None when no paid order is left."""
    film = session.get(Film, film_id)
    assert film is not None and film.state in (FilmState.FAILED, FilmState.CANCELLED)
    reason = refund_reason(session, film)
    up_to = () if last_id is None else (Order.id <= last_id,)
    batch = session.scalars(
        select(Order)
        .where(paid_orders_of(film_id), Order.id > after_id, *up_to)
        .order_by(Order.id)
        .limit(batch_size)
    ).all()
    if not batch:
        return None
    decided, units = 0, 0
    for order in batch:

        def decide(order: Order = order) -> bool:
            if not refund_paid_order(session, order, now=now, count_sold=False):
                return False
            queue_email(
                session,
                key=f"round-failed:{film_id}:{order.user_id}",
                to=order.user.email,
                template="round_failed",
                film=film,
                name=order.user.display_name,
                tz=order.user.time_zone,
                **reason,
            )
            return True

        refunded: bool | None
        if failures is None:
            refunded = decide()
        else:
            refunded = in_savepoint(session, f"order {order.reference} (film {film_id})", failures, decide)
        if refunded:
            decided += 1
            units += order.units
    # The film's counter moves once for the batch, last (the lock order: orders,
    # positions, then the film's inventory), and is held only until the commit.
    if units:
        adjust(session, film_id, None, sold=-units)
    return decided, batch[-1].id


def refund_reason(session: Session, film: Film) -> dict[str, object]:
    """What the refund e-mail says happened: the goal missed by the deadline,
    or a cancellation by the platform with the reason the admin gave."""
    cancel = cancellation(session, film)
    if cancel is not None:
        return {"cancelled": True, "cancel_reason": cancel.reason or "", "cancelled_at": cancel.at}
    return {"cancelled": False, "cancel_reason": "", "cancelled_at": None}


def _announce_funded(session: Session, film_id: int) -> int:
    queued, after = 0, 0
    while (batch := queue_funded_emails(session, film_id, after_user_id=after)) is not None:
        queued += batch[0]
        after = batch[1]
    return queued


def films_owing_refunds(session: Session) -> list[int]:
    return list(
        session.scalars(
            select(Order.film_id)
            .join(Film, Film.id == Order.film_id)
            .where(Order.status == OrderStatus.PAID, Film.state.in_((FilmState.FAILED, FilmState.CANCELLED)))
            .distinct()
        )
    )


def close_rounds(
    session: Session,
    gateway: StripeGateway,
    *,
    now: datetime,
    hold_window: timedelta,
    fee_bps: int,
    batch_size: int = 500,
) -> CloseReport:
    report = CloseReport()
    for film_id in films_due(session, now, hold_window):
        outcome = in_own_transaction(
            session,
            f"film {film_id}",
            report.failures,
            partial(decide_film, session, film_id, now=now, hold_window=hold_window, fee_bps=fee_bps),
        )
        if outcome == "funded":
            report.funded.append(film_id)
            # By hand, the tickets and e-mails are done here (after the decision's commit, outside its lock).
            in_own_transaction(
                session,
                f"film {film_id} tickets",
                report.failures,
                partial(issue_tickets, session, film_id, now=now),
            )
            in_own_transaction(
                session,
                f"film {film_id} e-mails",
                report.failures,
                partial(_announce_funded, session, film_id),
            )
        elif outcome == "failed":
            report.failed.append(film_id)
    # Includes films a crashed earlier run decided but did not finish refunding.
    for film_id in films_owing_refunds(session):
        decided = in_own_transaction(
            session,
            f"film {film_id} refunds",
            report.failures,
            partial(
                decide_refunds, session, film_id, now=now, batch_size=batch_size, failures=report.failures
            ),
        )
        report.refunds_decided += decided or 0
    # Isolates each order itself: one that fails is reported, the others go on.
    report.refunds_made = process_refunds(
        session, gateway, now=now, batch_size=batch_size, failures=report.failures
    )
    return report

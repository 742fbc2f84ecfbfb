"""The work that workers carry out from outbox rows (crowdfund/outbox/), one
handler per kind. Each owns its transactions and is idempotent by its row:
a row run twice (a lapsed lease, a redelivered message) has one effect,
because every unit inside claims itself (a refund its order, a statement
its position, a ticket batch its backers' positions, an e-mail its key).

A long piece of work is a chain of rows: a handler does one batch and, in
the same transaction as the batch, enqueues the row for the next batch
(keyed by where it starts), so a crash loses at most the batch in progress
and nothing is done twice.

- round.close_film: decide one film; a funded one gets its tickets and
  funded e-mails (as rows), a failed one its refund decisions (a row).
- refunds.decide: decide the refunds of one range of a failed or cancelled
  film's paid orders (the ranges are planned up front, so workers decide
  them in parallel) and hand them to a refunds.batch row.
- refunds.batch: carry out at Stripe the refunds of a range of orders.
- refunds.order: carry out one order's refund (a backer's cancellation, a late charge).
- refunds.anomaly: refund money that matched no order.
- tickets.issue: issue one batch of backers' tickets, chain the next.
- mail.funded: queue one batch of "your film is funded" e-mails, chain the next.
- payouts.write: write a batch of a payout run's statements, chain the next;
  the last one chains the statement e-mails.
- payouts.announce: queue one batch of statement e-mails, chain the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from crowdfund.funding.notices import queue_funded_emails
from crowdfund.jobs import UnitFailure
from crowdfund.outbox.running import Handler
from crowdfund.outbox.tasks import enqueue
from crowdfund.payments.gateway import StripeGateway
from crowdfund.payouts.models import PayoutRun, RunStatus
from crowdfund.payouts.runs import finish_run, run_weights, write_batch
from crowdfund.payouts.statements import announce_batch
from crowdfund.rewards.tickets import issue_tickets_batch
from crowdfund.workflows.refunds import REFUND_CLAIM_TIMEOUT, process_refunds, refund_anomaly
from crowdfund.workflows.round_close import decide_film, decide_refund_batch
from crowdfund.workflows.task_requests import (
    ANNOUNCE_STATEMENTS,
    CLOSE_FILM,
    DECIDE_REFUNDS,
    FUNDED_MAIL,
    ISSUE_TICKETS,
    REFUND_ANOMALY,
    REFUND_BATCH,
    REFUND_ORDER,
    WRITE_STATEMENTS,
    schedule_refunds,
    schedule_statements,
)

log = logging.getLogger(__name__)


class BatchIncomplete(Exception):
    """Some units of a batch failed (each named); the others were done and
    committed. Raised so the row runs again (with backoff) for the rest."""

    def __init__(self, failures: list[UnitFailure]) -> None:
        super().__init__("; ".join(map(str, failures)))
        self.failures = failures


@dataclass(frozen=True)
class TaskSettings:
    gateway: StripeGateway
    clock: Callable[[], datetime]
    hold_window: timedelta
    fee_bps: int
    #: Orders per refund decision batch and per refunds.batch row.
    refund_batch: int = 500
    statement_batch: int = 2000
    ticket_batch: int = 1000
    mail_batch: int = 1000
    #: A refund claimed this long ago by a worker that did not finish it is taken over.
    refund_claim_timeout: timedelta = REFUND_CLAIM_TIMEOUT


# --- the handlers ---


def handlers(settings: TaskSettings) -> dict[str, Handler]:
    def close_film(session: Session, args: Mapping[str, Any]) -> str:
        film_id = int(args["film_id"])
        now = settings.clock()
        outcome = decide_film(
            session, film_id, now=now, hold_window=settings.hold_window, fee_bps=settings.fee_bps
        )
        if outcome == "failed":
            schedule_refunds(session, film_id, now=now, batch_size=settings.refund_batch)
        session.commit()
        return outcome

    def decide_refunds(session: Session, args: Mapping[str, Any]) -> int:
        film_id, after_id, last_id = int(args["film_id"]), int(args["after_id"]), int(args["last_id"])
        now = settings.clock()
        failures: list[UnitFailure] = []
        batch = decide_refund_batch(
            session,
            film_id,
            after_id=after_id,
            last_id=last_id,
            now=now,
            batch_size=last_id - after_id,
            failures=failures,
        )
        decided = batch[0] if batch is not None else 0
        # The range's refunds, carried out at Stripe by the next free worker.
        enqueue(
            session,
            REFUND_BATCH,
            f"refund-batch:{film_id}:{after_id}:{last_id}",
            now=now,
            film_id=film_id,
            after_id=after_id,
            last_id=last_id,
        )
        session.commit()
        if failures:
            raise BatchIncomplete(failures)
        return decided

    def refund_range(session: Session, after_id: int, last_id: int) -> int:
        """Carry out the refunds owed of the orders after `after_id` up to `last_id`."""
        failures: list[UnitFailure] = []
        done = process_refunds(
            session,
            settings.gateway,
            now=settings.clock(),
            batch_size=settings.refund_batch,
            failures=failures,
            order_ids=(after_id, last_id),
            claim_timeout=settings.refund_claim_timeout,
        )
        if failures:
            raise BatchIncomplete(failures)
        return done

    def refund_batch(session: Session, args: Mapping[str, Any]) -> int:
        return refund_range(session, int(args["after_id"]), int(args["last_id"]))

    def refund_order(session: Session, args: Mapping[str, Any]) -> int:
        order_id = int(args["order_id"])
        return refund_range(session, order_id - 1, order_id)

    def refund_anomaly_task(session: Session, args: Mapping[str, Any]) -> bool:
        # A refusal by Stripe raises: the row is retried with backoff (and reconcile retries too).
        return refund_anomaly(session, int(args["anomaly_id"]), settings.gateway, now=settings.clock())

    def issue_tickets(session: Session, args: Mapping[str, Any]) -> int:
        film_id, after = int(args["film_id"]), int(args["after_user_id"])
        now = settings.clock()
        batch = issue_tickets_batch(
            session, film_id, after_user_id=after, now=now, batch_size=settings.ticket_batch
        )
        if batch is None:
            session.commit()
            return 0
        issued, last = batch
        enqueue(
            session, ISSUE_TICKETS, f"tickets:{film_id}:{last}", now=now, film_id=film_id, after_user_id=last
        )
        session.commit()
        return issued

    def funded_mail(session: Session, args: Mapping[str, Any]) -> int:
        film_id, after = int(args["film_id"]), int(args["after_user_id"])
        batch = queue_funded_emails(session, film_id, after_user_id=after, batch_size=settings.mail_batch)
        if batch is None:
            return 0
        queued, last = batch
        now = settings.clock()
        enqueue(
            session,
            FUNDED_MAIL,
            f"funded-mail:{film_id}:{last}",
            now=now,
            film_id=film_id,
            after_user_id=last,
        )
        session.commit()
        return queued

    def write_statements(session: Session, args: Mapping[str, Any]) -> int:
        run = session.get(PayoutRun, int(args["run_id"]))
        if run is None or run.status != RunStatus.COMPUTING:
            return 0
        now = settings.clock()
        weights = run_weights(session, run, batch_size=settings.statement_batch)
        batch = write_batch(session, run.id, weights, now=now, batch_size=settings.statement_batch)
        if batch is None:
            return 0
        if batch.complete:
            finish_run(session, batch.run, now=now)
            enqueue(session, ANNOUNCE_STATEMENTS, f"announce:{run.id}:-1", now=now, run_id=run.id, after=-1)
        else:
            schedule_statements(session, batch.run, now=now)
        session.commit()
        return batch.run.statements_written

    def announce(session: Session, args: Mapping[str, Any]) -> int:
        run_id, after = int(args["run_id"]), int(args["after"])
        batch = announce_batch(session, run_id, after=after, batch_size=settings.mail_batch)
        if batch is None:
            return 0
        queued, last = batch
        now = settings.clock()
        enqueue(session, ANNOUNCE_STATEMENTS, f"announce:{run_id}:{last}", now=now, run_id=run_id, after=last)
        session.commit()
        return queued

    return {
        CLOSE_FILM: close_film,
        DECIDE_REFUNDS: decide_refunds,
        REFUND_BATCH: refund_batch,
        REFUND_ORDER: refund_order,
        REFUND_ANOMALY: refund_anomaly_task,
        ISSUE_TICKETS: issue_tickets,
        FUNDED_MAIL: funded_mail,
        WRITE_STATEMENTS: write_statements,
        ANNOUNCE_STATEMENTS: announce,
    }

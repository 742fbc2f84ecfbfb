"""Carrying out refunds at Stripe: the refunds the ledger owes (a cancelled
order, a failed round) and the payment anomalies owed back; exactly once,
even across crashes and concurrent workers.

Transactions: this module owns them (a workflow, crowdfund/workflows/):
it commits before and after each call to Stripe, and no transaction is open
while Stripe is asked anything (crowdfund/workflows/steps.py: `reading`,
`writing`). What it asks the domains to do (crowdfund.funding) only flushes.
`process_refunds` is the batch job: each order in transactions of its own.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from crowdfund import audit, ledger
from crowdfund.db import rowcount
from crowdfund.errors import GatewayError
from crowdfund.funding.models import AnomalyState, Order, PaymentAnomaly, RefundState
from crowdfund.funding.refunds import book_refund_done, claim_refund, give_back_refund_claim
from crowdfund.jobs import UnitFailure, describe
from crowdfund.ledger import Account, EntryKind
from crowdfund.payments.gateway import StripeGateway
from crowdfund.workflows.steps import reading, writing

log = logging.getLogger(__name__)

#: A refund claimed by a worker that died is retried after this long.
REFUND_CLAIM_TIMEOUT = timedelta(minutes=10)


def process_refund(
    session: Session,
    order: Order,
    gateway: StripeGateway,
    *,
    now: datetime,
    claim_timeout: timedelta = REFUND_CLAIM_TIMEOUT,
) -> bool:
    """Carry out one refund the ledger owes. Exactly once, even across crashes
    and concurrent workers: a worker claims the order first, and if any worker
    ever claimed it before (and may have reached Stripe), it asks Stripe
    whether that try already refunded before refunding."""
    with writing(session):
        session.refresh(order)
        # Never claimed before: no refund call can have been made for this order.
        tried_before = order.refund_claimed_at is not None
        claimed = claim_refund(session, order, now=now, stale_before=now - claim_timeout)
    if not claimed:
        return False
    assert order.stripe_payment_intent_id is not None
    try:
        existing = (
            [r for r in gateway.find_refunds(order.stripe_payment_intent_id) if r.status != "failed"]
            if tried_before
            else []
        )
        refund = (
            existing[0]
            if existing
            else gateway.refund(
                order.stripe_payment_intent_id, order.amount_cents, idempotency_key=f"refund-{order.id}"
            )
        )
    except GatewayError:
        # Give the claim back at once; the next run retries, and since
        # refund_claimed_at stays set, it asks Stripe first (the failed call may
        # have been carried out after all).
        with writing(session):
            give_back_refund_claim(session, order, now=now)
        raise
    with writing(session):
        session.refresh(order)
        book_refund_done(session, order, refund.id, now=now)
    return True


def process_refunds(
    session: Session,
    gateway: StripeGateway,
    *,
    now: datetime,
    batch_size: int = 200,
    failures: list[UnitFailure] | None = None,
    order_ids: tuple[int, int] | None = None,
    claim_timeout: timedelta = REFUND_CLAIM_TIMEOUT,
) -> int:
    """Every refund owed (or those of the orders after `order_ids[0]` up to
    `order_ids[1]`), in batches; returns how many were carried out. Each
    order in transactions of its own: one that fails is rolled back, logged
    and added to `failures`, and the others go on."""
    done, after_id = 0, 0
    in_range: tuple[Any, ...] = ()
    if order_ids is not None:
        after_id, last_id = order_ids
        in_range = (Order.id <= last_id,)
    while True:
        with reading(session):
            batch = [
                (order, order.reference)
                for order in session.scalars(
                    select(Order)
                    .where(
                        Order.id > after_id,
                        *in_range,
                        Order.refund_state.in_((RefundState.REQUESTED, RefundState.PROCESSING)),
                    )
                    .order_by(Order.id)
                    .limit(batch_size)
                ).all()
            ]
            if batch:
                after_id = batch[-1][0].id
        if not batch:
            return done
        for order, reference in batch:
            try:
                if process_refund(session, order, gateway, now=now, claim_timeout=claim_timeout):
                    done += 1
            except Exception as exc:
                session.rollback()
                log.exception("refund of order %s failed; the next run retries it", reference)
                if failures is not None:
                    failures.append(UnitFailure(f"order {reference}", describe(exc)))
        session.expunge_all()


def refund_anomaly(session: Session, anomaly_id: int, gateway: StripeGateway, *, now: datetime) -> bool:
    """Refund an anomaly's PaymentIntent in full: once, even across crashes
    and concurrent workers (claimed first; a claim that may have reached
    Stripe asks Stripe before refunding). Returns whether this call did it."""
    with writing(session):
        anomaly = session.get(PaymentAnomaly, anomaly_id, populate_existing=True)
        assert anomaly is not None
        tried_before = anomaly.refund_claimed_at is not None
        claimed = rowcount(
            session.execute(
                update(PaymentAnomaly)
                .where(
                    PaymentAnomaly.id == anomaly_id,
                    or_(
                        PaymentAnomaly.state == AnomalyState.REFUND_OWED,
                        (PaymentAnomaly.state == AnomalyState.REFUNDING)
                        & (PaymentAnomaly.refund_claimed_at <= now - REFUND_CLAIM_TIMEOUT),
                    ),
                )
                .values(state=AnomalyState.REFUNDING, refund_claimed_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        intent_id = anomaly.payment_intent_id
    if not claimed:
        return False
    try:
        existing = (
            [r for r in gateway.find_refunds(intent_id) if r.status != "failed"] if tried_before else []
        )
        refund = (
            existing[0]
            if existing
            else gateway.refund(intent_id, None, idempotency_key=f"anomaly-refund-{anomaly_id}")
        )
    except GatewayError:
        with writing(session):
            session.execute(
                update(PaymentAnomaly)
                .where(PaymentAnomaly.id == anomaly_id)
                .values(state=AnomalyState.REFUND_OWED)
            )
        raise
    with writing(session):
        anomaly = session.get(PaymentAnomaly, anomaly_id, populate_existing=True)
        assert anomaly is not None
        anomaly.state = AnomalyState.REFUNDED
        anomaly.stripe_refund_id = refund.id
        anomaly.refunded_at = now
        if ledger.has_entry(session, EntryKind.UNMATCHED_PAYMENT.key(anomaly_id)):
            ledger.post(
                session,
                key=EntryKind.UNMATCHED_REFUND.key(anomaly_id),
                kind=EntryKind.UNMATCHED_REFUND,
                lines=[
                    (Account.UNMATCHED_PAYMENTS, anomaly.actual_amount_cents),
                    (Account.BACKER_CASH, -anomaly.actual_amount_cents),
                ],
                now=now,
                order_id=anomaly.order_id,
                memo=f"Refund {refund.id} of unmatched {intent_id}",
            )
        audit.record(
            session,
            action="payment.anomaly_refunded",
            object_type="payment_intent",
            object_id=intent_id,
            now=now,
            after={"stripe_refund_id": refund.id},
        )
    return True


def refund_anomaly_now(session: Session, anomaly_id: int, gateway: StripeGateway, *, now: datetime) -> None:
    """Refund at once if Stripe answers; otherwise `payments reconcile` retries."""
    try:
        refund_anomaly(session, anomaly_id, gateway, now=now)
    except GatewayError as exc:
        session.rollback()
        log.warning("refund of payment anomaly %s deferred: %s", anomaly_id, exc.detail or exc)

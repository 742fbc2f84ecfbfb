"""Settling from a PaymentIntent as Stripe reports it (the pay step, the
webhook and the reconciler all come here), and recording money that matched
no order.

Stripe's word is taken only from Stripe: a webhook event (signed, but
written by whoever holds the signing secret, and delivered late and out of
order) contributes just the id of its PaymentIntent, which is then retrieved.
A PaymentIntent settles an order only if its id is the order's, or its
metadata names the order and its amount and currency are the order's.
Anything else that took money is a payment anomaly: recorded, shown on the
finance page and refunded (crowdfund/workflows/refunds.py), never a paid order.

Transactions: these functions run in the caller's transaction and only
flush; the workflows that call them (checkout, stripe_events, reconcile)
commit around them, never across a call to Stripe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crowdfund import audit, ledger
from crowdfund.films.models import Film
from crowdfund.funding.models import AnomalyState, Order, OrderStatus, PaymentAnomaly
from crowdfund.funding.rules import cancellation_deadline
from crowdfund.funding.settlement import settle_failure, settle_success
from crowdfund.ledger import Account, EntryKind
from crowdfund.mail.outbox import queue_email
from crowdfund.payments.values import PaymentOutcome
from crowdfund.workflows.task_requests import schedule_anomaly_refund, schedule_order_refund

log = logging.getLogger(__name__)

CURRENCY = "usd"


@dataclass(frozen=True)
class PaymentResult:
    """What the fan sees after asking to pay."""

    status: str  # "paid", "requires_action", "failed", "pending", "refunded"
    message: str = ""
    client_secret: str | None = None


def queue_receipt(session: Session, order: Order) -> None:
    film = session.get(Film, order.film_id)
    assert film is not None
    queue_email(
        session,
        key=f"receipt:{order.id}",
        to=order.user.email,
        template="receipt",
        order=order,
        film=film,
        name=order.user.display_name,
        cancel_until=cancellation_deadline(film.deadline),
        tz=order.user.time_zone,
    )


def apply_outcome(session: Session, order: Order, outcome: PaymentOutcome, *, now: datetime) -> PaymentResult:
    """Record what Stripe says about the order's PaymentIntent. Idempotent."""
    if outcome.status == "succeeded":
        settlement = settle_success(session, order, now=now)
        if settlement.result == "refund":
            # Carried out at Stripe by a worker after this commits.
            schedule_order_refund(session, order, now=now)
            return PaymentResult(
                "refunded",
                "Your payment arrived after your hold expired and the stakes were "
                "taken, so it is being refunded in full.",
            )
        if order.status == OrderStatus.PAID:
            queue_receipt(session, order)
            return PaymentResult("paid")
        return PaymentResult(order.status)
    if outcome.status == "failed":
        settle_failure(session, order, outcome.failure_message or "The payment failed.", now=now)
        return PaymentResult(
            "failed",
            (outcome.failure_message or "The payment failed.")
            + " Your hold was released; you can try again with another card.",
        )
    if outcome.status == "requires_action":
        return PaymentResult("requires_action", client_secret=outcome.client_secret)
    return PaymentResult(
        "pending", "Your payment is being processed. This page will show it once it completes."
    )


@dataclass(frozen=True)
class IntentSettlement:
    """What one PaymentIntent did: `settled` its order (`result` says how),
    was a new `anomaly`, was a `known_anomaly`, or is `unknown` (not ours) or
    `ignored` (a mismatch that took no money)."""

    outcome: str
    order: Order | None = None
    result: PaymentResult | None = None
    anomaly_id: int | None = None


def _amount_problem(order: Order, intent: PaymentOutcome) -> str | None:
    if (intent.currency or "").lower() != CURRENCY:
        return "currency_mismatch"
    if intent.amount_cents != order.amount_cents:
        return "amount_mismatch"
    return None


def match_intent(session: Session, intent: PaymentOutcome) -> tuple[Order | None, str | None]:
    """The order a PaymentIntent (as Stripe reports it) pays for, and what is
    wrong with it: (order, None) settles the order; (order or None, kind) is an
    anomaly of that kind; (None, None) is not one of ours."""
    order = session.scalar(select(Order).where(Order.stripe_payment_intent_id == intent.payment_intent_id))
    if order is not None:
        return order, _amount_problem(order, intent)
    named = intent.metadata.get("order_id")
    if named is None and intent.metadata.get("order_reference") is None:
        return None, None  # made by something else using this Stripe account
    # ASCII digits only: "²" is a digit to isdigit() but not to int().
    order = (
        session.get(Order, int(named))
        if named and named.isascii() and named.isdigit() and len(named) < 19
        else None
    )
    if order is None:
        return None, "unknown_order"
    if intent.metadata.get("order_reference") != order.reference:
        return order, "reference_mismatch"
    if order.stripe_payment_intent_id is not None:
        return order, "order_has_another_intent"
    problem = _amount_problem(order, intent)
    if problem is not None:
        return order, problem
    if intent.status != "succeeded":
        # Not charged: the pay step may be about to record it itself (it
        # confirms only after recording), so neither record nor settle it here.
        return None, None
    # Made for this order and charged, but not recorded (the server died in
    # between, or a pay step outside ours): record it.
    session.execute(
        update(Order)
        .where(Order.id == order.id, Order.stripe_payment_intent_id.is_(None))
        .values(stripe_payment_intent_id=intent.payment_intent_id)
        .execution_options(synchronize_session=False)
    )
    session.refresh(order)
    if order.stripe_payment_intent_id != intent.payment_intent_id:
        return order, "order_has_another_intent"
    return order, None


def settle_intent(session: Session, intent: PaymentOutcome, *, now: datetime) -> IntentSettlement:
    """Settle from a PaymentIntent retrieved from Stripe (never from an event
    body), in the caller's transaction. The outcome is the intent's status."""
    order, problem = match_intent(session, intent)
    if (
        problem is not None
        and order is not None
        and order.stripe_payment_intent_id == intent.payment_intent_id
        and intent.status != "succeeded"
    ):
        # The order's own PaymentIntent took no money (a decline reports no
        # amount): its outcome stands; only money that does not match is refused.
        problem = None
    if problem is not None:
        if intent.status != "succeeded":
            log.warning(
                "payment intent %s (%s) does not match order %s, and took no money",
                intent.payment_intent_id,
                problem,
                order.reference if order else None,
            )
            return IntentSettlement("ignored", order)
        anomaly, new = record_anomaly(session, intent, order, problem, now=now)
        return IntentSettlement("anomaly" if new else "known_anomaly", order, anomaly_id=anomaly.id)
    if order is None:
        return IntentSettlement("unknown")
    return IntentSettlement("settled", order, apply_outcome(session, order, intent, now=now))


def record_anomaly(
    session: Session, intent: PaymentOutcome, order: Order | None, kind: str, *, now: datetime
) -> tuple[PaymentAnomaly, bool]:
    """Record money that arrived for no order, once per PaymentIntent, and
    owe it back. Returns the anomaly and whether it is new."""
    assert intent.payment_intent_id is not None
    existing = session.scalar(
        select(PaymentAnomaly).where(PaymentAnomaly.payment_intent_id == intent.payment_intent_id)
    )
    if existing is not None:
        return existing, False
    anomaly = PaymentAnomaly(
        payment_intent_id=intent.payment_intent_id,
        order_id=order.id if order else None,
        kind=kind,
        expected_amount_cents=order.amount_cents if order else None,
        expected_currency=CURRENCY if order else None,
        actual_amount_cents=int(intent.amount_cents or 0),
        actual_currency=(intent.currency or "").lower()[:16],
        detected_at=now,
        state=AnomalyState.REFUND_OWED,
    )
    try:
        with session.begin_nested():
            session.add(anomaly)
            session.flush()
    except IntegrityError:
        # Another settler (webhook, reconcile, the fan's return) recorded it first.
        return session.scalars(
            select(PaymentAnomaly).where(PaymentAnomaly.payment_intent_id == intent.payment_intent_id)
        ).one(), False
    # Refunded in full by a worker after this commits (reconcile retries what Stripe refuses).
    schedule_anomaly_refund(session, anomaly.id, now=now)
    if anomaly.actual_currency == CURRENCY and anomaly.actual_amount_cents:
        # The money is at Stripe (backer_cash) but belongs to no order: owed back to the payer.
        ledger.post(
            session,
            key=EntryKind.UNMATCHED_PAYMENT.key(anomaly.id),
            kind=EntryKind.UNMATCHED_PAYMENT,
            lines=[
                (Account.BACKER_CASH, anomaly.actual_amount_cents),
                (Account.UNMATCHED_PAYMENTS, -anomaly.actual_amount_cents),
            ],
            now=now,
            order_id=anomaly.order_id,
            memo=f"Unmatched payment {anomaly.payment_intent_id} ({kind})",
        )
    audit.record(
        session,
        action="payment.anomaly",
        object_type="payment_intent",
        object_id=anomaly.payment_intent_id,
        now=now,
        detail=kind,
        after={
            "order": order.reference if order else None,
            "kind": kind,
            "expected_amount_cents": anomaly.expected_amount_cents,
            "actual_amount_cents": anomaly.actual_amount_cents,
            "actual_currency": anomaly.actual_currency,
        },
    )
    log.warning(
        "payment anomaly: %s for order %s (%s): expected %s %s, Stripe has %s %s",
        anomaly.payment_intent_id,
        order.reference if order else None,
        kind,
        anomaly.expected_amount_cents,
        anomaly.expected_currency,
        anomaly.actual_amount_cents,
        anomaly.actual_currency,
    )
    return anomaly, True

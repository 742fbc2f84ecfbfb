"""Paying for held stakes, webhooks, refunds and the repair command.

These functions are use-case boundaries, like a CLI step: where money can
move at Stripe they commit the session first, so that what we asked Stripe
to do is on record before Stripe does it (the PaymentIntent id before the
charge, the refund decision before the refund). Everything else they leave
to funding.services, which only flushes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from crowdfund import ledger
from crowdfund.db import Base, UTCDateTime
from crowdfund.films.models import Film
from crowdfund.funding import services as funding
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.funding.rules import cancellation_deadline
from crowdfund.mail import queue_email
from crowdfund.payments.gateway import GatewayError, PaymentOutcome, StripeGateway, WebhookEvent

log = logging.getLogger(__name__)

CURRENCY = "usd"
#: A refund claimed by a worker that died is retried after this long.
REFUND_CLAIM_TIMEOUT = timedelta(minutes=10)


class StripeEvent(Base):
    """Each webhook event id once: a redelivered event changes nothing."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class PaymentResult:
    """What the fan sees after asking to pay."""

    status: str  # "paid", "requires_action", "failed", "pending", "refunded"
    message: str = ""
    client_secret: str | None = None


def _metadata(order: Order) -> dict[str, str]:
    return {
        "order_id": str(order.id),
        "order_reference": order.reference,
        "film_id": str(order.film_id),
        "user_id": str(order.user_id),
    }


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
    )


def apply_outcome(session: Session, order: Order, outcome: PaymentOutcome, *, now: datetime) -> PaymentResult:
    """Record what Stripe says about the order's PaymentIntent. Idempotent."""
    if outcome.status == "succeeded":
        settlement = funding.settle_success(session, order, now=now)
        if settlement.result == "refund":
            return PaymentResult("refunded", "Your payment arrived after your hold expired and the stakes were "
                                 "taken, so it is being refunded in full.")
        if order.status == OrderStatus.PAID:
            queue_receipt(session, order)
            return PaymentResult("paid")
        return PaymentResult(order.status)
    if outcome.status == "failed":
        funding.settle_failure(session, order, outcome.failure_message or "The payment failed.", now=now)
        return PaymentResult("failed", (outcome.failure_message or "The payment failed.")
                             + " Your hold was released; you can try again with another card.")
    if outcome.status == "requires_action":
        return PaymentResult("requires_action", client_secret=outcome.client_secret)
    return PaymentResult("pending", "Your payment is being processed. This page will show it once it completes.")


def pay_order(
    session: Session, order: Order, setup_intent_id: str | None, gateway: StripeGateway, *, now: datetime
) -> PaymentResult:
    """Charge the card set up for `order`; safe to call twice (double click,
    retry, the return from 3-D Secure): an order has at most one PaymentIntent
    and a PaymentIntent charges at most once."""
    session.refresh(order)
    if order.status == OrderStatus.PAID:
        return PaymentResult("paid")
    if order.stripe_payment_intent_id is None:
        if order.status != OrderStatus.PENDING:
            return PaymentResult("failed", "This hold is no longer active. Please choose your stakes again.")
        if order.expires_at <= now:
            return PaymentResult("failed", "Your hold expired before payment. Please choose your stakes again.")
        if not setup_intent_id:
            return PaymentResult("failed", "Enter your card details first.")
        payment_method = gateway.retrieve_setup_intent(setup_intent_id)
        if payment_method is None:
            return PaymentResult("failed", "Your card was not confirmed. Please enter it again.")
        intent_id = gateway.create_payment_intent(
            order.amount_cents, CURRENCY, _metadata(order), payment_method_id=payment_method,
            idempotency_key=f"order-{order.id}",
        )
        claimed = session.execute(
            update(Order)
            .where(Order.id == order.id, Order.stripe_payment_intent_id.is_(None), Order.status == OrderStatus.PENDING)
            .values(stripe_payment_intent_id=intent_id, stripe_setup_intent_id=setup_intent_id)
            .execution_options(synchronize_session=False)
        ).rowcount
        # On record before any money moves: a crash from here on is settled by
        # the webhook or `flask payments reconcile`.
        session.commit()
        session.refresh(order)
        if not claimed:
            # Another request for the same order got there first; ours never charges.
            gateway.cancel_payment_intent(intent_id)
            return pay_order(session, order, None, gateway, now=now)
        outcome = gateway.confirm_payment_intent(intent_id, payment_method, idempotency_key=f"order-{order.id}")
    else:
        outcome = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
    return apply_outcome(session, order, outcome, now=now)


def order_for_intent(session: Session, outcome: PaymentOutcome) -> Order | None:
    order = session.scalar(select(Order).where(Order.stripe_payment_intent_id == outcome.payment_intent_id))
    if order is not None:
        return order
    # Created but not yet recorded (the server died in between): the metadata knows.
    order_id = outcome.metadata.get("order_id", "")
    if not order_id.isdigit():
        return None
    order = session.get(Order, int(order_id))
    if order is None or order.stripe_payment_intent_id is not None:
        return None
    order.stripe_payment_intent_id = outcome.payment_intent_id
    session.flush()
    return order


def handle_webhook(session: Session, event: WebhookEvent, *, now: datetime) -> str:
    """Settle from a verified event; each event id is processed once."""
    if session.get(StripeEvent, event.id) is not None:
        return "duplicate"
    try:
        with session.begin_nested():
            session.add(StripeEvent(id=event.id, type=event.type, received_at=now))
    except IntegrityError:
        return "duplicate"
    outcome = event.payment_outcome()
    if outcome is None or event.type not in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        return "ignored"
    order = order_for_intent(session, outcome)
    if order is None:
        log.warning("webhook %s for unknown payment intent %s", event.id, outcome.payment_intent_id)
        return "unknown"
    if event.type == "payment_intent.succeeded":
        apply_outcome(session, order, PaymentOutcome("succeeded", outcome.payment_intent_id), now=now)
    else:
        apply_outcome(session, order, outcome, now=now)
    return "handled"


# --- refunds ---------------------------------------------------------------------------


def process_refund(session: Session, order: Order, gateway: StripeGateway, *, now: datetime) -> bool:
    """Carry out one refund the ledger owes. Exactly once, even across crashes
    and concurrent workers: a worker claims the order first, and if any worker
    ever claimed it before (and may have reached Stripe), it asks Stripe
    whether that try already refunded before refunding."""
    # Never claimed before: no refund call can have been made for this order.
    tried_before = order.refund_claimed_at is not None
    claimed = session.execute(
        update(Order)
        .where(
            Order.id == order.id,
            or_(
                Order.refund_state == "requested",
                (Order.refund_state == "processing") & (Order.refund_claimed_at <= now - REFUND_CLAIM_TIMEOUT),
            ),
        )
        .values(refund_state="processing", refund_claimed_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    if not claimed:
        return False
    session.refresh(order)
    assert order.stripe_payment_intent_id is not None
    try:
        existing = (
            [r for r in gateway.find_refunds(order.stripe_payment_intent_id) if r.status != "failed"]
            if tried_before else []
        )
        refund = existing[0] if existing else gateway.refund(
            order.stripe_payment_intent_id, order.amount_cents, idempotency_key=f"refund-{order.id}"
        )
    except GatewayError:
        # Give the claim back at once; the next run retries, and since
        # refund_claimed_at stays set, it asks Stripe first (the failed call may
        # have been carried out after all).
        session.execute(update(Order).where(Order.id == order.id).values(refund_state="requested"))
        session.commit()
        raise
    session.refresh(order)
    order.refund_state = "processing"  # book_refund_done checks "done"
    funding.book_refund_done(session, order, refund.id, now=now)
    session.commit()
    return True


def process_refunds(session: Session, gateway: StripeGateway, *, now: datetime, batch_size: int = 200) -> int:
    """Every refund owed, in batches; returns how many were carried out."""
    done, after_id = 0, 0
    while True:
        batch = session.scalars(
            select(Order)
            .where(Order.id > after_id, Order.refund_state.in_(("requested", "processing")))
            .order_by(Order.id)
            .limit(batch_size)
        ).all()
        if not batch:
            return done
        for order in batch:
            after_id = order.id
            if process_refund(session, order, gateway, now=now):
                done += 1
        session.expunge_all()


# --- repair ------------------------------------------------------------------------------


def reconcile(session: Session, gateway: StripeGateway, *, now: datetime, batch_size: int = 200) -> dict[str, int]:
    """Settle every order whose payment outcome was not recorded, by asking
    Stripe; then carry out refunds owed. Safe to run at any time."""
    counts = {"paid": 0, "failed": 0, "refunded": 0, "unchanged": 0, "refunds": 0}
    after_id = 0
    while True:
        batch = session.scalars(
            select(Order)
            .where(
                Order.id > after_id,
                Order.stripe_payment_intent_id.is_not(None),
                Order.status.in_((OrderStatus.PENDING, OrderStatus.EXPIRED, OrderStatus.FAILED)),
            )
            .order_by(Order.id)
            .limit(batch_size)
        ).all()
        if not batch:
            break
        for order in batch:
            after_id = order.id
            if order.status != OrderStatus.PENDING and ledger.has_entry(session, f"payment:{order.id}"):
                continue
            outcome = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
            if outcome.status in ("requires_action", "pending") and order.expires_at <= now:
                # Abandoned (3-D Secure never finished): make it unpayable first.
                outcome = gateway.cancel_payment_intent(outcome.payment_intent_id)
            if outcome.status == "failed" and order.status != OrderStatus.PENDING:
                counts["unchanged"] += 1
                continue
            result = apply_outcome(session, order, outcome, now=now)
            session.commit()
            key = {"paid": "paid", "failed": "failed", "refunded": "refunded"}.get(result.status, "unchanged")
            counts[key] += 1
        session.expunge_all()
    counts["refunds"] = process_refunds(session, gateway, now=now, batch_size=batch_size)
    return counts

"""Paying for held stakes, webhooks, refunds and the repair command.

These functions are use-case boundaries, like a CLI step: they own their
transactions, and no transaction is open while Stripe is asked anything (on
SQLite an open write transaction is the database's one write lock; on
PostgreSQL it keeps row locks and a connection idle in transaction). What
must be on record before Stripe acts (the PaymentIntent id before the charge,
the refund claim before the refund) is committed first; reads before a call
end before it; what Stripe answered is written in a new transaction whose
statements re-check the state they change. Everything else they leave to
funding.services, which only flushes.

Stripe's word is taken only from Stripe: a webhook event (signed, but
written by whoever holds the signing secret, and delivered late and out of
order) contributes just the id of its PaymentIntent, which is then retrieved.
A PaymentIntent settles an order only if its id is the order's, or its
metadata names the order and its amount and currency are the order's.
Anything else that took money is a payment anomaly: recorded, shown on the
finance page and refunded, never a paid order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, ForeignKey, Index, String, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from crowdfund import audit, ledger
from crowdfund.db import Base, UTCDateTime, rowcount, sqlite_begin
from crowdfund.errors import Conflict
from crowdfund.films.models import Film
from crowdfund.funding import services as funding
from crowdfund.funding.models import Order, OrderStatus, RefundState
from crowdfund.funding.rules import cancellation_deadline
from crowdfund.jobs import UnitFailure, describe
from crowdfund.ledger import Account, EntryKind
from crowdfund.mail.outbox import queue_email
from crowdfund.payments.gateway import (
    GatewayError,
    PaymentOutcome,
    SetupIntentInfo,
    StripeGateway,
    WebhookEvent,
)

log = logging.getLogger(__name__)

CURRENCY = "usd"
#: A refund claimed by a worker that died is retried after this long.
REFUND_CLAIM_TIMEOUT = timedelta(minutes=10)
#: SetupIntent statuses in which the checkout page can still collect a card with it.
REUSABLE_SETUP_STATUSES = ("requires_payment_method", "requires_confirmation", "requires_action")
NOT_THIS_ORDERS_CARD = ("This card was not set up for this order. Nothing was charged; please enter your card "
                        "again on this order's payment page.")


class StripeEvent(Base):
    """Each webhook event id once: a redelivered event changes nothing."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AnomalyState:
    REFUND_OWED = "refund_owed"
    REFUNDING = "refunding"  # claimed by a worker; retried when the claim is stale
    REFUNDED = "refunded"


class PaymentAnomaly(Base):
    """Money that arrived at Stripe for no order: a PaymentIntent that names
    an order it does not match. Recorded once per PaymentIntent (so refunded
    once), and refunded in full."""

    __tablename__ = "payment_anomalies"
    __table_args__ = (Index("ix_payment_anomalies_state", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), unique=True)
    #: The order the PaymentIntent names, if there is one.
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    #: amount_mismatch, currency_mismatch, order_has_another_intent, reference_mismatch, unknown_order
    kind: Mapped[str] = mapped_column(String(32))
    expected_amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    expected_currency: Mapped[str | None] = mapped_column(String(16))
    actual_amount_cents: Mapped[int] = mapped_column(BigInteger)
    actual_currency: Mapped[str] = mapped_column(String(16))
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16))
    refund_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255))
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class PaymentResult:
    """What the fan sees after asking to pay."""

    status: str  # "paid", "requires_action", "failed", "pending", "refunded"
    message: str = ""
    client_secret: str | None = None


@dataclass
class JobReport:
    """What `reconcile` did: counts by outcome, and what failed."""

    counts: dict[str, int]
    failures: list[UnitFailure] = field(default_factory=list)

    def __getitem__(self, key: str) -> int:
        return self.counts[key]


# --- transactions around calls to Stripe -----------------------------------------------


def _end_transaction(session: Session) -> None:
    """Nothing stays open across a call to Stripe: commit what this step has
    written (nothing, after a read)."""
    if session.in_transaction():
        session.commit()


@contextmanager
def _reading(session: Session) -> Iterator[None]:
    """Reads before a call to Stripe: DEFERRED on SQLite (waits for no
    writer), and over before Stripe is called."""
    _end_transaction(session)
    with sqlite_begin("DEFERRED"):
        yield
    _end_transaction(session)


@contextmanager
def _writing(session: Session) -> Iterator[None]:
    """One transaction that writes, committed at the end of the block.
    IMMEDIATE on SQLite: it queues for the write lock at BEGIN rather than fail
    to upgrade a read that another writer made stale."""
    _end_transaction(session)
    with sqlite_begin("IMMEDIATE"):
        yield
    session.commit()


def _metadata(order: Order) -> dict[str, str]:
    return {
        "order_id": str(order.id),
        "order_reference": order.reference,
        "film_id": str(order.film_id),
        "user_id": str(order.user_id),
    }


def _setup_metadata(order: Order) -> dict[str, str]:
    return {"order_id": str(order.id), "order_reference": order.reference, "user_id": str(order.user_id)}


def _names(metadata: Mapping[str, str], order: Order) -> bool:
    """Whether a SetupIntent's metadata names this order and its backer."""
    return (metadata.get("order_id") == str(order.id) and metadata.get("order_reference") == order.reference
            and metadata.get("user_id") == str(order.user_id))


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


# --- the checkout page's SetupIntent ------------------------------------------------------


def checkout_setup_intent(session: Session, order: Order, gateway: StripeGateway, *,
                          _attempts: int = 2) -> SetupIntentInfo:
    """The order's one SetupIntent, for the checkout page: made once, recorded
    on the order with metadata naming the order and its backer, and reused on
    every load of the page until it can no longer collect a card (then
    replaced). `order` is pending, without a PaymentIntent."""
    recorded = order.stripe_setup_intent_id
    _end_transaction(session)
    if recorded:
        try:
            current = gateway.setup_intent(recorded)
        except GatewayError as exc:
            if exc.retryable:
                raise
            current = None  # Stripe does not know it (any more): replace it
        if current is not None and current.status in REUSABLE_SETUP_STATUSES and _names(current.metadata, order):
            return SetupIntentInfo(id=current.id, client_secret=current.client_secret)
    created = gateway.create_setup_intent(_setup_metadata(order))
    with _writing(session):
        claimed = rowcount(session.execute(
            update(Order)
            .where(
                Order.id == order.id,
                Order.status == OrderStatus.PENDING,
                Order.stripe_payment_intent_id.is_(None),
                Order.stripe_setup_intent_id == recorded if recorded else Order.stripe_setup_intent_id.is_(None),
            )
            .values(stripe_setup_intent_id=created.id)
            .execution_options(synchronize_session=False)
        ))
        session.refresh(order)
    if claimed:
        return created
    # Another load of the page recorded its own first (or the order moved on):
    # ours is never used, and the order keeps one SetupIntent.
    gateway.cancel_setup_intent(created.id)
    if _attempts > 1 and order.status == OrderStatus.PENDING and order.stripe_payment_intent_id is None:
        return checkout_setup_intent(session, order, gateway, _attempts=_attempts - 1)
    raise Conflict("This order can no longer be paid here; reload the page.")


# --- paying --------------------------------------------------------------------------------


def _pay_refusal(order: Order, setup_intent_id: str | None, now: datetime) -> PaymentResult | None:
    if order.status != OrderStatus.PENDING:
        return PaymentResult("failed", "This hold is no longer active. Please choose your stakes again.")
    if order.expires_at <= now:
        return PaymentResult("failed", "Your hold expired before payment. Please choose your stakes again.")
    if not setup_intent_id:
        return PaymentResult("failed", "Enter your card details first.")
    if setup_intent_id != order.stripe_setup_intent_id:
        # Only the SetupIntent the checkout page made for this order: another
        # one may carry someone else's card.
        return PaymentResult("failed", NOT_THIS_ORDERS_CARD)
    return None


def pay_order(
    session: Session, order: Order, setup_intent_id: str | None, gateway: StripeGateway, *, now: datetime
) -> PaymentResult:
    """Charge the card set up for `order` (with the SetupIntent recorded on
    it); safe to call twice (double click, retry, the return from 3-D Secure):
    an order has at most one PaymentIntent and a PaymentIntent charges at most
    once."""
    with _reading(session):
        session.refresh(order)
    if order.status == OrderStatus.PAID:
        return PaymentResult("paid")
    if order.stripe_payment_intent_id is None:
        refusal = _pay_refusal(order, setup_intent_id, now)
        if refusal is not None:
            return refusal
        assert setup_intent_id is not None
        setup = gateway.setup_intent(setup_intent_id)
        if not _names(setup.metadata, order):
            log.warning("order %s: SetupIntent %s names another order or user", order.reference, setup_intent_id)
            return PaymentResult("failed", NOT_THIS_ORDERS_CARD)
        if setup.status != "succeeded" or setup.payment_method_id is None:
            return PaymentResult("failed", "Your card was not confirmed. Please enter it again.")
        intent_id = gateway.create_payment_intent(
            order.amount_cents, CURRENCY, _metadata(order), payment_method_id=setup.payment_method_id,
            idempotency_key=f"order-{order.id}",
        )
        # On record before any money moves: a crash from here on is settled by
        # the webhook or `flask payments reconcile`.
        with _writing(session):
            claimed = rowcount(session.execute(
                update(Order)
                .where(Order.id == order.id, Order.stripe_payment_intent_id.is_(None),
                       Order.status == OrderStatus.PENDING, Order.stripe_setup_intent_id == setup_intent_id)
                .values(stripe_payment_intent_id=intent_id)
                .execution_options(synchronize_session=False)
            ))
            session.refresh(order)
        if not claimed:
            # Another request for the same order got there first; ours never charges.
            if order.stripe_payment_intent_id != intent_id:
                gateway.cancel_payment_intent(intent_id)
            return pay_order(session, order, None, gateway, now=now)
        outcome = gateway.confirm_payment_intent(intent_id, setup.payment_method_id,
                                                 idempotency_key=f"order-{order.id}")
    else:
        outcome = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
    with _writing(session):
        settled = settle_intent(session, outcome, now=now)
    if settled.anomaly_id is not None:
        refund_anomaly_now(session, settled.anomaly_id, gateway, now=now)
        return PaymentResult("failed", "Your payment did not match this order, so it is being refunded in full.")
    return settled.result or PaymentResult("pending", "Your payment is being processed. This page will show it "
                                                      "once it completes.")


# --- settling from a PaymentIntent as Stripe reports it -----------------------------------------


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
    order = (session.get(Order, int(named))
             if named and named.isascii() and named.isdigit() and len(named) < 19 else None)
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
    if problem is not None and order is not None and order.stripe_payment_intent_id == intent.payment_intent_id \
            and intent.status != "succeeded":
        # The order's own PaymentIntent took no money (a decline reports no
        # amount): its outcome stands; only money that does not match is refused.
        problem = None
    if problem is not None:
        if intent.status != "succeeded":
            log.warning("payment intent %s (%s) does not match order %s, and took no money", intent.payment_intent_id,
                        problem, order.reference if order else None)
            return IntentSettlement("ignored", order)
        anomaly, new = record_anomaly(session, intent, order, problem, now=now)
        return IntentSettlement("anomaly" if new else "known_anomaly", order, anomaly_id=anomaly.id)
    if order is None:
        return IntentSettlement("unknown")
    return IntentSettlement("settled", order, apply_outcome(session, order, intent, now=now))


def record_anomaly(session: Session, intent: PaymentOutcome, order: Order | None, kind: str, *,
                   now: datetime) -> tuple[PaymentAnomaly, bool]:
    """Record money that arrived for no order, once per PaymentIntent, and
    owe it back. Returns the anomaly and whether it is new."""
    assert intent.payment_intent_id is not None
    existing = session.scalar(select(PaymentAnomaly).where(PaymentAnomaly.payment_intent_id == intent.payment_intent_id))
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
        return session.scalars(select(PaymentAnomaly).where(
            PaymentAnomaly.payment_intent_id == intent.payment_intent_id)).one(), False
    if anomaly.actual_currency == CURRENCY and anomaly.actual_amount_cents:
        # The money is at Stripe (backer_cash) but belongs to no order: owed back to the payer.
        ledger.post(
            session, key=EntryKind.UNMATCHED_PAYMENT.key(anomaly.id), kind=EntryKind.UNMATCHED_PAYMENT,
            lines=[(Account.BACKER_CASH, anomaly.actual_amount_cents),
                   (Account.UNMATCHED_PAYMENTS, -anomaly.actual_amount_cents)],
            now=now, order_id=anomaly.order_id, memo=f"Unmatched payment {anomaly.payment_intent_id} ({kind})",
        )
    audit.record(session, action="payment.anomaly", object_type="payment_intent",
                 object_id=anomaly.payment_intent_id, now=now, detail=kind,
                 after={"order": order.reference if order else None, "kind": kind,
                        "expected_amount_cents": anomaly.expected_amount_cents,
                        "actual_amount_cents": anomaly.actual_amount_cents,
                        "actual_currency": anomaly.actual_currency})
    log.warning("payment anomaly: %s for order %s (%s): expected %s %s, Stripe has %s %s",
                anomaly.payment_intent_id, order.reference if order else None, kind, anomaly.expected_amount_cents,
                anomaly.expected_currency, anomaly.actual_amount_cents, anomaly.actual_currency)
    return anomaly, True


def refund_anomaly(session: Session, anomaly_id: int, gateway: StripeGateway, *, now: datetime) -> bool:
    """Refund an anomaly's PaymentIntent in full: once, even across crashes
    and concurrent workers (claimed first; a claim that may have reached
    Stripe asks Stripe before refunding). Returns whether this call did it."""
    with _writing(session):
        anomaly = session.get(PaymentAnomaly, anomaly_id, populate_existing=True)
        assert anomaly is not None
        tried_before = anomaly.refund_claimed_at is not None
        claimed = rowcount(session.execute(
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
        ))
        intent_id = anomaly.payment_intent_id
    if not claimed:
        return False
    try:
        existing = [r for r in gateway.find_refunds(intent_id) if r.status != "failed"] if tried_before else []
        refund = existing[0] if existing else gateway.refund(intent_id, None,
                                                             idempotency_key=f"anomaly-refund-{anomaly_id}")
    except GatewayError:
        with _writing(session):
            session.execute(update(PaymentAnomaly).where(PaymentAnomaly.id == anomaly_id)
                            .values(state=AnomalyState.REFUND_OWED))
        raise
    with _writing(session):
        anomaly = session.get(PaymentAnomaly, anomaly_id, populate_existing=True)
        assert anomaly is not None
        anomaly.state = AnomalyState.REFUNDED
        anomaly.stripe_refund_id = refund.id
        anomaly.refunded_at = now
        if ledger.has_entry(session, EntryKind.UNMATCHED_PAYMENT.key(anomaly_id)):
            ledger.post(
                session, key=EntryKind.UNMATCHED_REFUND.key(anomaly_id), kind=EntryKind.UNMATCHED_REFUND,
                lines=[(Account.UNMATCHED_PAYMENTS, anomaly.actual_amount_cents),
                       (Account.BACKER_CASH, -anomaly.actual_amount_cents)],
                now=now, order_id=anomaly.order_id, memo=f"Refund {refund.id} of unmatched {intent_id}",
            )
        audit.record(session, action="payment.anomaly_refunded", object_type="payment_intent", object_id=intent_id,
                     now=now, after={"stripe_refund_id": refund.id})
    return True


def refund_anomaly_now(session: Session, anomaly_id: int, gateway: StripeGateway, *, now: datetime) -> None:
    """Refund at once if Stripe answers; otherwise `payments reconcile` retries."""
    try:
        refund_anomaly(session, anomaly_id, gateway, now=now)
    except GatewayError as exc:
        session.rollback()
        log.warning("refund of payment anomaly %s deferred: %s", anomaly_id, exc.detail or exc)


# --- webhooks --------------------------------------------------------------------------------


def _record_event(session: Session, event: WebhookEvent, now: datetime) -> bool:
    """Mark the event as processed in the current transaction; False if it was already."""
    if session.get(StripeEvent, event.id) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(StripeEvent(id=event.id, type=event.type, received_at=now))
    except IntegrityError:
        return False
    return True


def handle_webhook(session: Session, event: WebhookEvent, gateway: StripeGateway, *, now: datetime) -> str:
    """Settle from a verified event; each event id is processed once. Only
    the PaymentIntent's id is taken from the event: the PaymentIntent itself
    is retrieved from Stripe. GatewayError (Stripe could not be asked) is
    raised so that the view answers 503 and Stripe sends the event again."""
    with _reading(session):
        seen = session.get(StripeEvent, event.id) is not None
    if seen:
        return "duplicate"
    intent_id = event.payment_intent_id()
    intent: PaymentOutcome | None = None
    if intent_id is not None:
        try:
            intent = gateway.retrieve_payment_intent(intent_id)
        except GatewayError as exc:
            if exc.retryable:
                raise
            log.warning("webhook %s names payment intent %s, which Stripe does not know: %s", event.id, intent_id,
                        exc.detail)
    with _writing(session):
        if not _record_event(session, event, now):
            return "duplicate"
        if intent is None:
            return "ignored" if intent_id is None else "unknown"
        settled = settle_intent(session, intent, now=now)
    if settled.anomaly_id is not None and settled.outcome == "anomaly":
        refund_anomaly_now(session, settled.anomaly_id, gateway, now=now)
    if settled.outcome == "unknown":
        log.warning("webhook %s for unknown payment intent %s", event.id, intent_id)
    return {"settled": "handled", "known_anomaly": "anomaly"}.get(settled.outcome, settled.outcome)


# --- refunds ---------------------------------------------------------------------------


def process_refund(session: Session, order: Order, gateway: StripeGateway, *, now: datetime) -> bool:
    """Carry out one refund the ledger owes. Exactly once, even across crashes
    and concurrent workers: a worker claims the order first, and if any worker
    ever claimed it before (and may have reached Stripe), it asks Stripe
    whether that try already refunded before refunding."""
    with _writing(session):
        session.refresh(order)
        # Never claimed before: no refund call can have been made for this order.
        tried_before = order.refund_claimed_at is not None
        claimed = funding.claim_refund(session, order, now=now, stale_before=now - REFUND_CLAIM_TIMEOUT)
    if not claimed:
        return False
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
        with _writing(session):
            funding.give_back_refund_claim(session, order, now=now)
        raise
    with _writing(session):
        session.refresh(order)
        funding.book_refund_done(session, order, refund.id, now=now)
    return True


def process_refunds(session: Session, gateway: StripeGateway, *, now: datetime, batch_size: int = 200,
                    failures: list[UnitFailure] | None = None) -> int:
    """Every refund owed, in batches; returns how many were carried out. Each
    order in transactions of its own: one that fails is rolled back, logged
    and added to `failures`, and the others go on."""
    done, after_id = 0, 0
    while True:
        with _reading(session):
            batch = [(order, order.reference) for order in session.scalars(
                select(Order)
                .where(Order.id > after_id, Order.refund_state.in_((RefundState.REQUESTED, RefundState.PROCESSING)))
                .order_by(Order.id)
                .limit(batch_size)
            ).all()]
            if batch:
                after_id = batch[-1][0].id
        if not batch:
            return done
        for order, reference in batch:
            try:
                if process_refund(session, order, gateway, now=now):
                    done += 1
            except Exception as exc:
                session.rollback()
                log.exception("refund of order %s failed; the next run retries it", reference)
                if failures is not None:
                    failures.append(UnitFailure(f"order {reference}", describe(exc)))
        session.expunge_all()


# --- repair ------------------------------------------------------------------------------


def _reconcile_order(session: Session, order_id: int, gateway: StripeGateway, *, now: datetime) -> str:
    """Ask Stripe about one order's PaymentIntent and settle from its answer."""
    with _reading(session):
        order = session.get(Order, order_id, populate_existing=True)
        if order is None or (order.status != OrderStatus.PENDING
                             and ledger.has_entry(session, EntryKind.PAYMENT.key(order.id))):
            return "unchanged"
        intent_id, status, expires_at = order.stripe_payment_intent_id, order.status, order.expires_at
    assert intent_id is not None
    outcome = gateway.retrieve_payment_intent(intent_id)
    if outcome.status in ("requires_action", "pending") and expires_at <= now:
        # Abandoned (3-D Secure never finished): make it unpayable first.
        outcome = gateway.cancel_payment_intent(intent_id)
    if outcome.status == "failed" and status != OrderStatus.PENDING:
        return "unchanged"
    with _writing(session):
        settled = settle_intent(session, outcome, now=now)
    if settled.outcome == "anomaly":
        assert settled.anomaly_id is not None
        refund_anomaly_now(session, settled.anomaly_id, gateway, now=now)
        return "anomalies"
    result = settled.result.status if settled.result else ""
    return {"paid": "paid", "failed": "failed", "refunded": "refunded"}.get(result, "unchanged")


def reconcile(session: Session, gateway: StripeGateway, *, now: datetime, batch_size: int = 200) -> JobReport:
    """Settle every order whose payment outcome was not recorded, by asking
    Stripe; refund payment anomalies and carry out refunds owed. Safe to run at
    any time. Each order in transactions of its own: one that fails is rolled
    back, logged and reported, and the others go on."""
    report = JobReport({"paid": 0, "failed": 0, "refunded": 0, "unchanged": 0, "anomalies": 0,
                        "anomaly_refunds": 0, "refunds": 0})
    after_id = 0
    while True:
        with _reading(session):
            batch = session.execute(
                select(Order.id, Order.reference)
                .where(
                    Order.id > after_id,
                    Order.stripe_payment_intent_id.is_not(None),
                    Order.status.in_((OrderStatus.PENDING, OrderStatus.EXPIRED, OrderStatus.FAILED)),
                    # An anomaly is refunded, never settled: no need to ask again.
                    Order.stripe_payment_intent_id.not_in(select(PaymentAnomaly.payment_intent_id)),
                )
                .order_by(Order.id)
                .limit(batch_size)
            ).all()
        if not batch:
            break
        for order_id, reference in batch:
            after_id = order_id
            try:
                report.counts[_reconcile_order(session, order_id, gateway, now=now)] += 1
            except Exception as exc:
                session.rollback()
                log.exception("reconcile: order %s failed; the next run retries it", reference)
                report.failures.append(UnitFailure(f"order {reference}", describe(exc)))
        session.expunge_all()
    with _reading(session):
        owed = session.execute(
            select(PaymentAnomaly.id, PaymentAnomaly.payment_intent_id)
            .where(PaymentAnomaly.state.in_((AnomalyState.REFUND_OWED, AnomalyState.REFUNDING)))
            .order_by(PaymentAnomaly.id)
        ).all()
    for anomaly_id, intent_id in owed:
        try:
            if refund_anomaly(session, anomaly_id, gateway, now=now):
                report.counts["anomaly_refunds"] += 1
        except Exception as exc:
            session.rollback()
            log.exception("refund of payment anomaly %s failed; the next run retries it", intent_id)
            report.failures.append(UnitFailure(f"payment anomaly {intent_id}", describe(exc)))
    report.counts["refunds"] = process_refunds(session, gateway, now=now, batch_size=batch_size,
                                               failures=report.failures)
    return report

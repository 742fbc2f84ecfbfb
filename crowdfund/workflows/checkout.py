"""The checkout page's SetupIntent, and paying for a held order with it.

Transactions: this module owns them (a workflow, crowdfund/workflows/):
it commits before and after each call to Stripe, and no transaction is open
while Stripe is asked anything (crowdfund/workflows/steps.py: `reading`,
`writing`). What it asks the domains to do (crowdfund.funding) only flushes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from crowdfund.db import rowcount
from crowdfund.errors import Conflict, GatewayError
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.payments.gateway import StripeGateway
from crowdfund.payments.values import SetupIntentInfo
from crowdfund.workflows.settle import CURRENCY, PaymentResult, settle_intent
from crowdfund.workflows.steps import end_transaction, reading, writing

log = logging.getLogger(__name__)

#: SetupIntent statuses in which the checkout page can still collect a card with it.
REUSABLE_SETUP_STATUSES = ("requires_payment_method", "requires_confirmation", "requires_action")
NOT_THIS_ORDERS_CARD = (
    "This card was not set up for this order. Nothing was charged; please enter your card "
    "again on this order's payment page."
)


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
    return (
        metadata.get("order_id") == str(order.id)
        and metadata.get("order_reference") == order.reference
        and metadata.get("user_id") == str(order.user_id)
    )


def checkout_setup_intent(
    session: Session, order: Order, gateway: StripeGateway, *, _attempts: int = 2
) -> SetupIntentInfo:
    """The order's one SetupIntent, for the checkout page: made once, recorded
    on the order with metadata naming the order and its backer, and reused on
    every load of the page until it can no longer collect a card (then
    replaced). `order` is pending, without a PaymentIntent."""
    recorded = order.stripe_setup_intent_id
    end_transaction(session)
    if recorded:
        try:
            current = gateway.setup_intent(recorded)
        except GatewayError as exc:
            if exc.retryable:
                raise
            current = None  # Stripe does not know it (any more): replace it
        if (
            current is not None
            and current.status in REUSABLE_SETUP_STATUSES
            and _names(current.metadata, order)
        ):
            return SetupIntentInfo(id=current.id, client_secret=current.client_secret)
    created = gateway.create_setup_intent(_setup_metadata(order))
    with writing(session):
        claimed = rowcount(
            session.execute(
                update(Order)
                .where(
                    Order.id == order.id,
                    Order.status == OrderStatus.PENDING,
                    Order.stripe_payment_intent_id.is_(None),
                    Order.stripe_setup_intent_id == recorded
                    if recorded
                    else Order.stripe_setup_intent_id.is_(None),
                )
                .values(stripe_setup_intent_id=created.id)
                .execution_options(synchronize_session=False)
            )
        )
        session.refresh(order)
    if claimed:
        return created
    # Another load of the page recorded its own first (or the order moved on):
    # ours is never used, and the order keeps one SetupIntent.
    gateway.cancel_setup_intent(created.id)
    if _attempts > 1 and order.status == OrderStatus.PENDING and order.stripe_payment_intent_id is None:
        return checkout_setup_intent(session, order, gateway, _attempts=_attempts - 1)
    raise Conflict("This order can no longer be paid here; reload the page.")


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
    with reading(session):
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
            log.warning(
                "order %s: SetupIntent %s names another order or user", order.reference, setup_intent_id
            )
            return PaymentResult("failed", NOT_THIS_ORDERS_CARD)
        if setup.status != "succeeded" or setup.payment_method_id is None:
            return PaymentResult("failed", "Your card was not confirmed. Please enter it again.")
        intent_id = gateway.create_payment_intent(
            order.amount_cents,
            CURRENCY,
            _metadata(order),
            payment_method_id=setup.payment_method_id,
            idempotency_key=f"order-{order.id}",
        )
        # On record before any money moves: a crash from here on is settled by
        # the webhook or `flask payments reconcile`.
        with writing(session):
            claimed = rowcount(
                session.execute(
                    update(Order)
                    .where(
                        Order.id == order.id,
                        Order.stripe_payment_intent_id.is_(None),
                        Order.status == OrderStatus.PENDING,
                        Order.stripe_setup_intent_id == setup_intent_id,
                    )
                    .values(stripe_payment_intent_id=intent_id)
                    .execution_options(synchronize_session=False)
                )
            )
            session.refresh(order)
        if not claimed:
            # Another request for the same order got there first; ours never charges.
            if order.stripe_payment_intent_id != intent_id:
                gateway.cancel_payment_intent(intent_id)
            return pay_order(session, order, None, gateway, now=now)
        outcome = gateway.confirm_payment_intent(
            intent_id, setup.payment_method_id, idempotency_key=f"order-{order.id}"
        )
    else:
        outcome = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
    with writing(session):
        settled = settle_intent(session, outcome, now=now)
    if settled.anomaly_id is not None:
        return PaymentResult(
            "failed", "Your payment did not match this order, so it is being refunded in full."
        )
    return settled.result or PaymentResult(
        "pending", "Your payment is being processed. This page will show it once it completes."
    )

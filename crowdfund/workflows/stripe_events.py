"""Stripe's webhook events: each event id processed once; only the id of
its PaymentIntent is taken from the event, the PaymentIntent itself is
retrieved from Stripe (crowdfund/workflows/settle.py).

Transactions: this module owns them (a workflow, crowdfund/workflows/):
it commits before and after each call to Stripe, and no transaction is open
while Stripe is asked anything (crowdfund/workflows/steps.py: `reading`,
`writing`). What it asks the domains to do (crowdfund.funding) only flushes.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crowdfund.errors import GatewayError
from crowdfund.funding.models import StripeEvent
from crowdfund.payments.gateway import StripeGateway
from crowdfund.payments.values import PaymentOutcome, WebhookEvent
from crowdfund.workflows.settle import settle_intent
from crowdfund.workflows.steps import reading, writing

log = logging.getLogger(__name__)


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
    with reading(session):
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
            log.warning(
                "webhook %s names payment intent %s, which Stripe does not know: %s",
                event.id,
                intent_id,
                exc.detail,
            )
    with writing(session):
        if not _record_event(session, event, now):
            return "duplicate"
        if intent is None:
            return "ignored" if intent_id is None else "unknown"
        settled = settle_intent(session, intent, now=now)
    # A new anomaly's refund is an outbox row committed with it (settle.record_anomaly).
    if settled.outcome == "unknown":
        log.warning("webhook %s for unknown payment intent %s", event.id, intent_id)
    return {"settled": "handled", "known_anomaly": "anomaly"}.get(settled.outcome, settled.outcome)

"""The repair job (`flask payments reconcile`): settle every order whose
payment outcome was not recorded, by asking Stripe; refund payment anomalies
and carry out refunds owed. Safe to run at any time.

Transactions: this module owns them (a workflow, crowdfund/workflows/):
it commits before and after each call to Stripe, and no transaction is open
while Stripe is asked anything (crowdfund/workflows/steps.py: `reading`,
`writing`). What it asks the domains to do (crowdfund.funding) only flushes.
The job owns its batches: each order in transactions of its own; one that
fails is rolled back, logged and reported, and the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund import ledger
from crowdfund.funding.models import AnomalyState, Order, OrderStatus, PaymentAnomaly
from crowdfund.jobs import UnitFailure, describe
from crowdfund.ledger import EntryKind
from crowdfund.payments.gateway import StripeGateway
from crowdfund.workflows.refunds import process_refunds, refund_anomaly, refund_anomaly_now
from crowdfund.workflows.settle import settle_intent
from crowdfund.workflows.steps import reading, writing

log = logging.getLogger(__name__)


@dataclass
class JobReport:
    """What `reconcile` did: counts by outcome, and what failed."""

    counts: dict[str, int]
    failures: list[UnitFailure] = field(default_factory=list)

    def __getitem__(self, key: str) -> int:
        return self.counts[key]


def _reconcile_order(session: Session, order_id: int, gateway: StripeGateway, *, now: datetime) -> str:
    """Ask Stripe about one order's PaymentIntent and settle from its answer."""
    with reading(session):
        order = session.get(Order, order_id, populate_existing=True)
        if order is None or (
            order.status != OrderStatus.PENDING and ledger.has_entry(session, EntryKind.PAYMENT.key(order.id))
        ):
            return "unchanged"
        intent_id, status, expires_at = order.stripe_payment_intent_id, order.status, order.expires_at
    assert intent_id is not None
    outcome = gateway.retrieve_payment_intent(intent_id)
    if outcome.status in ("requires_action", "pending") and expires_at <= now:
        # Abandoned (3-D Secure never finished): make it unpayable first.
        outcome = gateway.cancel_payment_intent(intent_id)
    if outcome.status == "failed" and status != OrderStatus.PENDING:
        return "unchanged"
    with writing(session):
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
    report = JobReport(
        {
            "paid": 0,
            "failed": 0,
            "refunded": 0,
            "unchanged": 0,
            "anomalies": 0,
            "anomaly_refunds": 0,
            "refunds": 0,
        }
    )
    after_id = 0
    while True:
        with reading(session):
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
    with reading(session):
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
    report.counts["refunds"] = process_refunds(
        session, gateway, now=now, batch_size=batch_size, failures=report.failures
    )
    return report

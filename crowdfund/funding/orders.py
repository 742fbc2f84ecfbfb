"""Orders: their references and the one function that moves an order between
states (and the refund machine the refund steps move)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from crowdfund import transitions
from crowdfund.funding.models import Order, OrderStatus, RefundState
from crowdfund.funding.rules import ORDER_TRANSITIONS, REFUND_TRANSITIONS

REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def new_reference() -> str:
    # 12 characters from 32 symbols: 60 random bits, unguessable and easy to read aloud.
    # One draw of 60 bits, five per symbol (a choice() per symbol costs 12 draws).
    bits = secrets.randbits(60)
    return "RS-" + "".join(REFERENCE_ALPHABET[(bits >> shift) & 31] for shift in range(0, 60, 5))


# --- the one function that moves an order between states -----------------------------


ORDER = transitions.Machine(name="order", model=Order, column="status", transitions=ORDER_TRANSITIONS)
#: Refund moves are audited only when Stripe has the refund; the claims are not.
REFUND = transitions.Machine(
    name="refund",
    model=Order,
    column="refund_state",
    transitions=REFUND_TRANSITIONS,
    audit_actions={RefundState.DONE: "refund.done"},
    audit_object_type="order",
    audit_object_id=lambda order: order.reference,
    # The refund worker calls Stripe between its transactions: the order must
    # not need a reload (a transaction) after its claim.
    keep_loaded=True,
)


def move_order(
    session: Session,
    order: Order,
    target: OrderStatus,
    *,
    now: datetime,
    where: Sequence[ColumnElement[bool]] = (),
    **values: object,
) -> bool:
    """Move `order` to `target` if it is still in the status we last saw.

    Checks the transition, then updates conditionally on the old status so
    that of two concurrent movers exactly one wins. Returns False (and
    refreshes `order`) when another transaction moved it first. A refund
    decided with the move (`refund_state=`) is checked against the refund
    machine's table. No history or audit per move: the hot path stays cheap.
    """
    if "refund_state" in values:
        transitions.check(REFUND, order.refund_state, values["refund_state"])  # type: ignore[arg-type]
    if target in (OrderStatus.CANCELLED, OrderStatus.REFUNDED, OrderStatus.EXPIRED, OrderStatus.FAILED):
        values.setdefault("closed_at", now)
    if target == OrderStatus.PAID:
        values.setdefault("paid_at", now)
    return transitions.move(session, ORDER, order, target, now=now, values=values, where=where)

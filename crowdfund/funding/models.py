from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crowdfund.accounts.models import User
from crowdfund.db import Base, UTCDateTime, utcnow
from crowdfund.films.models import Film


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class RefundState(StrEnum):
    """Where an order's refund is; None: no refund owed."""

    REQUESTED = "requested"
    #: A refund worker claimed it (refund_claimed_at) and may be calling Stripe.
    PROCESSING = "processing"
    DONE = "done"


class FilmInventory(Base):
    """A film's stake counters: the one hot row every hold updates conditionally."""

    __tablename__ = "film_inventory"
    __table_args__ = (CheckConstraint("sold >= 0 AND held >= 0 AND sold + held <= cap", name="within_cap"),)

    film_id: Mapped[int] = mapped_column(ForeignKey("films.id", ondelete="CASCADE"), primary_key=True)
    cap: Mapped[int] = mapped_column(Integer)
    #: Units in paid orders.
    sold: Mapped[int] = mapped_column(Integer, default=0)
    #: Units in pending orders, including expired ones not yet released.
    held: Mapped[int] = mapped_column(Integer, default=0)


class BackerPosition(Base):
    """Units a backer has paid for or holds in one film; bounded by the per-backer limit."""

    __tablename__ = "backer_positions"
    __table_args__ = (CheckConstraint("units >= 0", name="units"),)

    film_id: Mapped[int] = mapped_column(ForeignKey("films.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, index=True)
    units: Mapped[int] = mapped_column(Integer, default=0)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("units > 0", name="units"),
        CheckConstraint("amount_cents = units * unit_price_cents", name="amount"),
        CheckConstraint(
            "status IN ('pending', 'paid', 'expired', 'failed', 'cancelled', 'refunded')",
            name="status",
        ),
        CheckConstraint(
            "refund_state IS NULL OR refund_state IN ('requested', 'processing', 'done')",
            name="refund_state",
        ),
        UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_idempotency_key"),
        Index("ix_orders_film_status_expires_at", "film_id", "status", "expires_at"),
        Index("ix_orders_refund_state", "refund_state"),
        Index("ix_orders_status_expires_at", "status", "expires_at"),
        # One pending order per backer and film: a new hold replaces the old
        # one (funding.holds.hold_stakes); this refuses a second one made
        # at the same moment from another window.
        Index(
            "uq_orders_one_pending_per_film",
            "user_id",
            "film_id",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Shown to the backer and on receipts; random, not derived from the id.
    reference: Mapped[str] = mapped_column(String(24), unique=True)
    film_id: Mapped[int] = mapped_column(ForeignKey("films.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    units: Mapped[int] = mapped_column(Integer)
    unit_price_cents: Mapped[int] = mapped_column(Integer)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.PENDING.value)
    #: The token of the form that created the order: a resubmitted form finds it again.
    idempotency_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: The hold lapses at this moment unless the order is paid.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stripe_setup_intent_id: Mapped[str | None] = mapped_column(String(255))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255))
    #: Refund progress (RefundState), None while no refund is owed; the backer sees requested or done.
    refund_state: Mapped[str | None] = mapped_column(String(16))
    #: When a refund worker claimed this order; a stale claim is retried.
    refund_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_message: Mapped[str | None] = mapped_column(Text)

    film: Mapped[Film] = relationship(lazy="joined")
    user: Mapped[User] = relationship()


# --- payment records: Stripe's events and money that matched no order ---------------


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

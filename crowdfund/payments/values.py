"""What crosses the Stripe boundary (crowdfund/payments/gateway.py): plain
frozen dataclasses, never a stripe object, so that nothing else depends on
the SDK."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PaymentStatus = Literal["succeeded", "requires_action", "pending", "failed"]

STATUS: dict[str, PaymentStatus] = {
    "succeeded": "succeeded",
    "requires_action": "requires_action",
    "requires_source_action": "requires_action",  # pre-2019 API name
    "requires_payment_method": "failed",
    "canceled": "failed",
    "processing": "pending",
    "requires_confirmation": "pending",
    "requires_capture": "pending",
}


@dataclass(frozen=True)
class SetupIntentInfo:
    id: str
    client_secret: str


@dataclass(frozen=True)
class SetupIntentState:
    """A SetupIntent as Stripe reports it."""

    id: str
    client_secret: str
    status: str  # Stripe's own: requires_payment_method, requires_action, succeeded, canceled, ...
    payment_method_id: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PaymentOutcome:
    status: PaymentStatus
    payment_intent_id: str | None
    client_secret: str | None = None  # for stripe.confirmCardPayment when requires_action
    failure_message: str | None = None  # shown to the customer when failed
    amount_cents: int | None = None
    currency: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundInfo:
    id: str
    status: str  # Stripe's own: pending, requires_action, succeeded, failed, canceled
    amount_cents: int


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    created: int
    data_object: Mapping[str, Any]  # the object the event is about, as sent

    def payment_outcome(self) -> PaymentOutcome | None:
        """The PaymentIntent snapshot carried by a payment_intent.* event.
        Never settle from it: anyone holding the signing secret can write it,
        and events arrive late and out of order. Ask Stripe instead."""
        if self.data_object.get("object") != "payment_intent":
            return None
        return outcome_of(self.data_object)

    def payment_intent_id(self) -> str | None:
        """The id of the PaymentIntent a payment_intent.* event is about: the
        one thing taken from the event body."""
        if not self.type.startswith("payment_intent.") or self.data_object.get("object") != "payment_intent":
            return None
        intent_id = self.data_object.get("id")
        return intent_id if isinstance(intent_id, str) and intent_id else None


def outcome_of(intent: Mapping[str, Any]) -> PaymentOutcome:
    raw_status = str(intent.get("status"))
    status = STATUS.get(raw_status, "pending")
    if raw_status == "requires_payment_method" and not intent.get("last_payment_error"):
        # No payment was attempted yet (no card, or none tried): nothing failed.
        status = "pending"
    message = None
    if status == "failed":
        error = intent.get("last_payment_error") or {}
        if raw_status == "canceled":
            message = "The payment was canceled."
        elif error.get("message"):
            message = str(error["message"])
        else:
            message = "The payment was not completed."
    return PaymentOutcome(
        status=status,
        payment_intent_id=str(intent["id"]),
        client_secret=intent.get("client_secret") if status == "requires_action" else None,
        failure_message=message,
        amount_cents=intent.get("amount"),
        currency=intent.get("currency"),
        metadata=dict(intent.get("metadata") or {}),
    )

"""The one module that talks to Stripe.

Everything crossing this boundary is a plain frozen dataclass or a plain dict,
never a stripe object, so the rest of the app does not depend on the SDK. The
calls are written to behave the same on real Stripe and on localstripe (the
fake used in development and tests); docs/localstripe-notes.md lists the
differences that shaped them.

Errors: a card decline is not an exception, it is a PaymentOutcome with status
"failed". GatewayError means Stripe could not be asked (down, slow, refused,
misconfigured) and the outcome is unknown; InvalidWebhook means a webhook
request must be rejected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import requests
import stripe

from crowdfund.errors import GatewayError, InvalidWebhook
from crowdfund.payments.values import (
    PaymentOutcome,
    RefundInfo,
    SetupIntentInfo,
    SetupIntentState,
    WebhookEvent,
    outcome_of,
)
from crowdfund.rate_limit import RateLimitTimeout, TokenBucket, UnlimitedBucket

if TYPE_CHECKING:
    from stripe import RequestOptions
    from stripe.params import PaymentIntentCreateParams, RefundCreateParams, SetupIntentCreateParams

DECLINED = "Your card was declined."


def _translate(error: stripe.StripeError) -> GatewayError:
    detail = f"{type(error).__name__}: {error.user_message or error}"
    if isinstance(error, stripe.APIConnectionError):
        return GatewayError("The payment service could not be reached. Please try again shortly.", detail)
    if isinstance(error, stripe.RateLimitError):
        return GatewayError("The payment service is busy. Please try again shortly.", detail)
    if isinstance(error, (stripe.AuthenticationError, stripe.PermissionError)):
        return GatewayError("Payments are not configured correctly.", detail, retryable=False)
    if isinstance(error, (stripe.InvalidRequestError, stripe.IdempotencyError, stripe.CardError)):
        return GatewayError("The payment service rejected the request.", detail, retryable=False)
    # stripe.APIError and anything newer: a 5xx or an unreadable answer.
    return GatewayError("The payment service had a problem. Please try again shortly.", detail)


@contextmanager
def _stripe_errors() -> Iterator[None]:
    try:
        yield
    except stripe.StripeError as error:
        raise _translate(error) from error


def _plain(obj: Any) -> dict[str, Any]:
    # StripeObject is not a dict in stripe>=12; localstripe payloads already are.
    return obj if isinstance(obj, dict) else obj.to_dict()


def _id_of(value: Any) -> str | None:
    # localstripe embeds objects (latest_charge, error.payment_intent) where
    # real Stripe sends an id; accept either.
    if value is None or isinstance(value, str):
        return value
    return str(value["id"])


def _declined(error: stripe.CardError, payment_intent_id: str | None) -> PaymentOutcome:
    message = error.user_message or DECLINED
    return PaymentOutcome(status="failed", payment_intent_id=payment_intent_id, failure_message=message)


def _options(idempotency_key: str | None) -> RequestOptions:
    return {"idempotency_key": idempotency_key} if idempotency_key else {}


class _RateLimitedClient(stripe.RequestsClient):
    """Takes a token from the bucket before every HTTP request the SDK sends:
    each call, each network retry, each page of a list."""

    def __init__(self, bucket: TokenBucket, wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._bucket, self._wait_seconds = bucket, wait_seconds

    def _take(self) -> None:
        try:
            self._bucket.acquire(self._wait_seconds)
        except RateLimitTimeout as error:
            # Unsent, as after a 429 from Stripe: the gateway reports it the same way ("busy, try again").
            raise stripe.RateLimitError(str(error)) from error

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self._take()
        return super().request(*args, **kwargs)

    def request_stream(self, *args: Any, **kwargs: Any) -> Any:
        self._take()
        return super().request_stream(*args, **kwargs)


class StripeGateway:
    """Card payments through one StripeClient. Thread-safe enough for a web
    app: one instance per process, shared by request threads.

    `rate_limit` is the bucket every request to Stripe takes a token from
    first (crowdfund/rate_limit.py; shared by all workers when it lives in
    Redis); a request that would wait longer than `rate_limit_wait_seconds`
    for its token is not sent and fails as "busy" (retryable), well before
    gunicorn's 30 s would kill a web request that waited with it."""

    def __init__(
        self,
        api_key: str,
        api_base: str,
        webhook_secret: str,
        timeout_seconds: float = 20,
        max_network_retries: int = 2,
        rate_limit: TokenBucket | None = None,
        rate_limit_wait_seconds: float = 5,
    ) -> None:
        self._webhook_secret = webhook_secret
        # One shared session instead of RequestsClient's per-thread ones, so
        # close() really closes every pooled connection.
        self._session = requests.Session()
        self._http = _RateLimitedClient(
            rate_limit or UnlimitedBucket(),
            rate_limit_wait_seconds,
            timeout=timeout_seconds,
            session=self._session,
        )
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            http_client=self._http,
            max_network_retries=max_network_retries,
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> StripeGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Collecting a card -------------------------------------------------

    def create_setup_intent(self, metadata: Mapping[str, str]) -> SetupIntentInfo:
        """A SetupIntent for the browser's stripe.confirmCardSetup()."""
        # on_session: the customer is present when we charge, right after setup.
        params: SetupIntentCreateParams = {
            "usage": "on_session",
            # localstripe knows only this name; stripe 16's types call it allowed_payment_method_types.
            "payment_method_types": ["card"],  # type: ignore[typeddict-unknown-key]
            "metadata": dict(metadata),
        }
        with _stripe_errors():
            intent = self._client.v1.setup_intents.create(params)
        return SetupIntentInfo(id=intent.id, client_secret=str(intent.client_secret))

    def retrieve_setup_intent(self, setup_intent_id: str) -> str | None:
        """The PaymentMethod id the browser attached, once the SetupIntent has
        succeeded (3-D Secure included); None before that or if it failed."""
        with _stripe_errors():
            intent = self._client.v1.setup_intents.retrieve(setup_intent_id)
        if intent.status != "succeeded":
            return None
        return _id_of(intent.payment_method)

    def setup_intent(self, setup_intent_id: str) -> SetupIntentState:
        """The SetupIntent as Stripe has it: status, card and metadata."""
        with _stripe_errors():
            intent = _plain(self._client.v1.setup_intents.retrieve(setup_intent_id))
        return SetupIntentState(
            id=str(intent["id"]),
            client_secret=str(intent.get("client_secret") or ""),
            status=str(intent.get("status")),
            payment_method_id=_id_of(intent.get("payment_method")),
            metadata=dict(intent.get("metadata") or {}),
        )

    def cancel_setup_intent(self, setup_intent_id: str) -> None:
        """Make a SetupIntent unusable; one that cannot be canceled any more is left as it is."""
        try:
            self._client.v1.setup_intents.cancel(setup_intent_id)
        except stripe.InvalidRequestError:
            pass
        except stripe.StripeError as error:
            raise _translate(error) from error

    # --- Charging ----------------------------------------------------------

    def create_payment_intent(
        self,
        amount_cents: int,
        currency: str,
        metadata: Mapping[str, str],
        payment_method_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """An unconfirmed PaymentIntent; returns its id so the caller can
        record it before any money can move. It waits in
        `requires_confirmation` (with the payment method) or
        `requires_payment_method` (without): both are reported as "pending"."""
        params: PaymentIntentCreateParams = {
            "amount": amount_cents,
            "currency": currency,
            # Cards only: no redirect-based methods, so no return_url needed.
            # localstripe knows only this name; stripe 16's types call it allowed_payment_method_types.
            "payment_method_types": ["card"],  # type: ignore[typeddict-unknown-key]
            "metadata": dict(metadata),
        }
        if payment_method_id:
            params["payment_method"] = payment_method_id
        with _stripe_errors():
            intent = self._client.v1.payment_intents.create(params, _options(idempotency_key))
        return intent.id

    def confirm_payment_intent(
        self,
        payment_intent_id: str,
        payment_method_id: str,
        idempotency_key: str | None = None,
    ) -> PaymentOutcome:
        """Charge the card. Safe to repeat: if the intent was already
        confirmed, this reports its current outcome instead."""
        # localstripe answers `confirm` with a payment_method by 500 "Not
        # implemented", so attach it with an update first (fine on Stripe too).
        key = idempotency_key
        try:
            self._client.v1.payment_intents.update(
                payment_intent_id, {"payment_method": payment_method_id}, _options(key and f"{key}:attach")
            )
            intent = self._client.v1.payment_intents.confirm(
                payment_intent_id, {}, _options(key and f"{key}:confirm")
            )
        except stripe.CardError as error:
            return _declined(error, payment_intent_id)
        except stripe.InvalidRequestError as error:
            # Already confirmed (a retry, or it settled meanwhile): report the state.
            current = self.retrieve_payment_intent(payment_intent_id)
            if current.status != "pending":
                return current
            raise _translate(error) from error
        except stripe.StripeError as error:
            raise _translate(error) from error
        return outcome_of(_plain(intent))

    def charge(
        self,
        amount_cents: int,
        currency: str,
        payment_method_id: str,
        metadata: Mapping[str, str],
        idempotency_key: str | None = None,
    ) -> PaymentOutcome:
        """Create and confirm a PaymentIntent in one call."""
        params: PaymentIntentCreateParams = {
            "amount": amount_cents,
            "currency": currency,
            "payment_method": payment_method_id,
            # localstripe knows only this name; stripe 16's types call it allowed_payment_method_types.
            "payment_method_types": ["card"],  # type: ignore[typeddict-unknown-key]
            "confirm": True,
            "metadata": dict(metadata),
        }
        try:
            intent = self._client.v1.payment_intents.create(params, _options(idempotency_key))
        except stripe.CardError as error:
            return _declined(error, self._intent_of_decline(error))
        except stripe.StripeError as error:
            raise _translate(error) from error
        return outcome_of(_plain(intent))

    def _intent_of_decline(self, error: stripe.CardError) -> str | None:
        # Stripe puts the PaymentIntent on the error; localstripe only the charge.
        found = _id_of(error.error.payment_intent) if error.error else None
        charge_id = error.error.charge if error.error else None
        if found or not charge_id:
            return found
        try:
            return _id_of(self._client.v1.charges.retrieve(charge_id).payment_intent)
        except stripe.StripeError:
            return None  # the decline itself is certain; only its id is lost

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentOutcome:
        with _stripe_errors():
            intent = self._client.v1.payment_intents.retrieve(payment_intent_id)
        return outcome_of(_plain(intent))

    def cancel_payment_intent(self, payment_intent_id: str) -> PaymentOutcome:
        """Make an abandoned intent unpayable (e.g. 3-D Secure never done)
        before releasing its hold. If it already settled, report that."""
        try:
            intent = self._client.v1.payment_intents.cancel(payment_intent_id)
        except stripe.InvalidRequestError:
            return self.retrieve_payment_intent(payment_intent_id)  # not cancelable: settled
        except stripe.StripeError as error:
            raise _translate(error) from error
        return outcome_of(_plain(intent))

    # --- Refunds -----------------------------------------------------------

    def refund(
        self,
        payment_intent_id: str,
        amount_cents: int | None = None,
        idempotency_key: str | None = None,
    ) -> RefundInfo:
        """Refund `amount_cents` (all of it when None). localstripe does not
        check the amount against what is left: the caller must."""
        params: RefundCreateParams = {"payment_intent": payment_intent_id}
        if amount_cents is not None:
            params["amount"] = amount_cents
        with _stripe_errors():
            refund = self._client.v1.refunds.create(params, _options(idempotency_key))
        return _refund_info(refund)

    def find_refunds(self, payment_intent_id: str) -> list[RefundInfo]:
        """Every refund of the intent, newest first. localstripe sends no
        refund webhooks, so this is how the app learns of them."""
        with _stripe_errors():
            intent = self._client.v1.payment_intents.retrieve(payment_intent_id)
            # localstripe fails with a 500 listing refunds of a charge-less intent.
            if intent.latest_charge is None:
                return []
            page = self._client.v1.refunds.list({"payment_intent": payment_intent_id, "limit": 100})
            return [_refund_info(refund) for refund in page.auto_paging_iter()]

    # --- Webhooks ----------------------------------------------------------

    def construct_event(self, payload: bytes, sig_header: str | None) -> WebhookEvent:
        """Verify a webhook's Stripe-Signature (default 300 s tolerance either
        way) and parse it. Raises InvalidWebhook."""
        tolerance = stripe.Webhook.DEFAULT_TOLERANCE
        try:
            stripe.WebhookSignature.verify_header(payload, sig_header, self._webhook_secret, tolerance)
            # The SDK refuses only timestamps too far in the past; one far in the
            # future would let a captured signature be replayed for that long.
            if _signed_at(sig_header or "") > time.time() + tolerance:
                raise InvalidWebhook("the signature's timestamp is in the future")
            event = json.loads(payload)
            data_object = event["data"]["object"]
            if not isinstance(data_object, dict):
                raise TypeError("data.object is not an object")
            return WebhookEvent(
                id=str(event["id"]),
                type=str(event["type"]),
                created=int(event["created"]),
                data_object=data_object,
            )
        except stripe.SignatureVerificationError as error:
            raise InvalidWebhook(str(error)) from error
        except (ValueError, KeyError, TypeError) as error:  # UnicodeDecodeError is a ValueError
            raise InvalidWebhook(f"not a Stripe event: {error!r}") from error


def _signed_at(sig_header: str) -> int:
    # The timestamp verify_header checked: the first `t=` item, as the SDK reads it.
    for item in sig_header.split(","):
        key, _, value = item.partition("=")
        if key == "t":
            return int(value)
    raise ValueError("no timestamp in the signature header")


def _refund_info(refund: Any) -> RefundInfo:
    return RefundInfo(id=refund.id, status=str(refund.status), amount_cents=int(refund.amount))

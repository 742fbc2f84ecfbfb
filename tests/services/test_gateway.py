"""The Stripe gateway against a real localstripe on loopback, through the real
stripe SDK: no mocks."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from crowdfund.dev.localstripe_server import (
    LocalStripe,
    LocalStripeError,
    confirm_card_payment,
    confirm_card_setup,
    create_card_payment_method,
)
from crowdfund.errors import GatewayError, InvalidWebhook
from crowdfund.payments.gateway import StripeGateway
from tests.localstripe_fixture import (  # noqa: F401  (fixtures)
    PUBLISHABLE_KEY,
    SECRET_KEY,
    WEBHOOK_SECRET,
    WebhookSink,
    localstripe,
    webhook_sink,
)

PAYS = "4242424242424242"
DECLINES = "4000000000000341"
NEEDS_3DS = "4000002500003155"
META = {"order": "17", "film": "3", "user": "5"}


@pytest.fixture(scope="module")
def gateway(localstripe: LocalStripe) -> Iterator[StripeGateway]:
    with StripeGateway(SECRET_KEY, localstripe.url, WEBHOOK_SECRET, timeout_seconds=5) as gw:
        yield gw


def card(localstripe: LocalStripe, number: str) -> str:
    return create_card_payment_method(localstripe.url, SECRET_KEY, number)


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """A Stripe-Signature header, computed as Stripe documents it."""
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), b"%d." % timestamp + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# --- Setup intents -----------------------------------------------------------


def test_setup_intent_gives_the_browser_a_client_secret(gateway: StripeGateway) -> None:
    info = gateway.create_setup_intent(META)
    assert info.id.startswith("seti_")
    assert info.client_secret.startswith(info.id + "_secret_")
    assert gateway.retrieve_setup_intent(info.id) is None  # no card yet


def test_setup_intent_yields_the_card_the_browser_confirmed(
    gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    info = gateway.create_setup_intent(META)
    confirm_card_setup(localstripe.url, PUBLISHABLE_KEY, info.client_secret, PAYS)
    payment_method = gateway.retrieve_setup_intent(info.id)
    assert payment_method is not None and payment_method.startswith("pm_")
    assert gateway.charge(500, "eur", payment_method, META, "k-setup").status == "succeeded"


def test_setup_intent_for_a_3ds_card_succeeds_once_authenticated(
    gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    info = gateway.create_setup_intent(META)
    confirm_card_setup(localstripe.url, PUBLISHABLE_KEY, info.client_secret, NEEDS_3DS)
    assert gateway.retrieve_setup_intent(info.id) is not None

    abandoned = gateway.create_setup_intent(META)
    confirm_card_setup(
        localstripe.url, PUBLISHABLE_KEY, abandoned.client_secret, NEEDS_3DS, authenticate=False
    )
    assert gateway.retrieve_setup_intent(abandoned.id) is None


def test_setup_with_a_card_refused_at_attach_is_a_402(
    gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    info = gateway.create_setup_intent(META)
    with pytest.raises(LocalStripeError) as raised:
        confirm_card_setup(localstripe.url, PUBLISHABLE_KEY, info.client_secret, "4000000000000002")
    assert raised.value.status == 402
    assert gateway.retrieve_setup_intent(info.id) is None


# --- Charging ----------------------------------------------------------------


def test_charge_with_a_good_card_succeeds(gateway: StripeGateway, localstripe: LocalStripe) -> None:
    outcome = gateway.charge(2500, "eur", card(localstripe, PAYS), META, "k-good")
    assert outcome.status == "succeeded"
    assert outcome.payment_intent_id and outcome.payment_intent_id.startswith("pi_")
    assert (outcome.amount_cents, outcome.currency, dict(outcome.metadata)) == (2500, "eur", META)
    assert outcome.failure_message is None and outcome.client_secret is None
    assert gateway.retrieve_payment_intent(outcome.payment_intent_id) == outcome


def test_charge_declined_is_an_outcome_with_a_message_and_the_intent_id(
    gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    outcome = gateway.charge(2500, "eur", card(localstripe, DECLINES), META, "k-decline")
    assert outcome.status == "failed"
    assert outcome.failure_message == "Your card was declined."
    # localstripe's error names only the charge; the gateway finds the intent.
    assert outcome.payment_intent_id and outcome.payment_intent_id.startswith("pi_")
    again = gateway.retrieve_payment_intent(outcome.payment_intent_id)
    assert (again.status, again.failure_message) == ("failed", "Your card was declined.")


def test_charge_needing_3ds_returns_the_client_secret(
    gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    outcome = gateway.charge(2500, "eur", card(localstripe, NEEDS_3DS), META, "k-3ds")
    assert outcome.status == "requires_action"
    assert outcome.payment_intent_id
    assert outcome.client_secret and outcome.client_secret.startswith(outcome.payment_intent_id + "_secret_")
    assert gateway.retrieve_payment_intent(outcome.payment_intent_id) == outcome

    confirm_card_payment(localstripe.url, PUBLISHABLE_KEY, outcome.client_secret, success=True)
    assert gateway.retrieve_payment_intent(outcome.payment_intent_id).status == "succeeded"


def test_failed_3ds_is_a_failed_payment(gateway: StripeGateway, localstripe: LocalStripe) -> None:
    outcome = gateway.charge(2500, "eur", card(localstripe, NEEDS_3DS), META, "k-3ds-fail")
    assert outcome.client_secret
    confirm_card_payment(localstripe.url, PUBLISHABLE_KEY, outcome.client_secret, success=False)
    after = gateway.retrieve_payment_intent(str(outcome.payment_intent_id))
    assert after.status == "failed"
    assert after.failure_message == "The provided PaymentMethod has failed authentication."


def test_two_step_payment_records_the_id_before_confirming(
    gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    intent_id = gateway.create_payment_intent(1200, "eur", META, idempotency_key="k-two")
    unconfirmed = gateway.retrieve_payment_intent(intent_id)
    # Awaiting a payment method: nothing was tried, so nothing failed.
    assert (unconfirmed.status, unconfirmed.failure_message) == ("pending", None)

    payment_method = card(localstripe, PAYS)
    outcome = gateway.confirm_payment_intent(intent_id, payment_method, "k-two")
    assert (outcome.status, outcome.payment_intent_id, outcome.amount_cents) == ("succeeded", intent_id, 1200)
    # A retry of the same confirmation reports the settled state, not an error.
    assert gateway.confirm_payment_intent(intent_id, payment_method, "k-two") == outcome


def test_two_step_decline_and_3ds(gateway: StripeGateway, localstripe: LocalStripe) -> None:
    declined_id = gateway.create_payment_intent(1200, "eur", META)
    declined = gateway.confirm_payment_intent(declined_id, card(localstripe, DECLINES))
    assert (declined.status, declined.payment_intent_id) == ("failed", declined_id)
    assert declined.failure_message == "Your card was declined."

    secure_id = gateway.create_payment_intent(1200, "eur", META)
    secure = gateway.confirm_payment_intent(secure_id, card(localstripe, NEEDS_3DS))
    assert secure.status == "requires_action" and secure.client_secret


def test_cancel_makes_an_abandoned_intent_unpayable(gateway: StripeGateway, localstripe: LocalStripe) -> None:
    outcome = gateway.charge(900, "eur", card(localstripe, NEEDS_3DS), META)
    canceled = gateway.cancel_payment_intent(str(outcome.payment_intent_id))
    assert (canceled.status, canceled.failure_message) == ("failed", "The payment was canceled.")
    with pytest.raises(LocalStripeError):
        confirm_card_payment(localstripe.url, PUBLISHABLE_KEY, str(outcome.client_secret))

    paid = gateway.charge(900, "eur", card(localstripe, PAYS), META)
    assert gateway.cancel_payment_intent(str(paid.payment_intent_id)).status == "succeeded"


# --- Refunds -----------------------------------------------------------------


def test_refunds_are_made_and_read_back(gateway: StripeGateway, localstripe: LocalStripe) -> None:
    paid = gateway.charge(3000, "eur", card(localstripe, PAYS), META)
    intent_id = str(paid.payment_intent_id)
    assert gateway.find_refunds(intent_id) == []

    partial = gateway.refund(intent_id, 1000, "refund-1")
    assert partial.id.startswith("re_")
    assert (partial.status, partial.amount_cents) == ("succeeded", 1000)
    rest = gateway.refund(intent_id, None, "refund-2")
    assert rest.amount_cents == 3000  # localstripe refunds the full amount again: it checks nothing

    assert {r.id for r in gateway.find_refunds(intent_id)} == {partial.id, rest.id}


def test_no_refunds_for_an_intent_never_charged(gateway: StripeGateway) -> None:
    # Listing refunds of such an intent makes localstripe crash with a 500.
    assert gateway.find_refunds(gateway.create_payment_intent(100, "eur", META)) == []


# --- Webhooks ----------------------------------------------------------------


def event_payload(event_id: str = "evt_1", status: str = "succeeded") -> bytes:
    intent = {
        "id": "pi_1",
        "object": "payment_intent",
        "status": status,
        "amount": 100,
        "currency": "eur",
        "metadata": META,
        "client_secret": "pi_1_secret_x",
    }
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {"object": intent},
        }
    ).encode()


def test_construct_event_accepts_a_correctly_signed_payload(gateway: StripeGateway) -> None:
    payload = event_payload()
    event = gateway.construct_event(payload, sign(payload))
    assert (event.id, event.type, event.data_object["id"]) == ("evt_1", "payment_intent.succeeded", "pi_1")
    outcome = event.payment_outcome()
    assert outcome is not None and (outcome.status, outcome.payment_intent_id) == ("succeeded", "pi_1")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda p: sign(p, secret="whsec_wrong"), id="forged"),
        pytest.param(lambda p: sign(p, at=int(time.time()) - 301), id="stale"),
        pytest.param(lambda p: sign(p, at=int(time.time()) + 600), id="from-the-future"),
        pytest.param(lambda p: sign(p + b" "), id="payload-changed"),
        pytest.param(lambda p: "", id="missing"),
        pytest.param(lambda p: "garbage", id="malformed"),
    ],
)
def test_construct_event_rejects_bad_signatures(
    gateway: StripeGateway, header: Callable[[bytes], str]
) -> None:
    payload = event_payload()
    with pytest.raises(InvalidWebhook):
        gateway.construct_event(payload, header(payload))


NOT_EVENTS = [
    b"not json",
    b'{"id": "evt_1"}',
    b"\xff\xfe",
    b'{"id": 1, "type": "x", "created": 1, "data": {"object": []}}',
]


@pytest.mark.parametrize("payload", NOT_EVENTS)
def test_construct_event_rejects_signed_non_events(gateway: StripeGateway, payload: bytes) -> None:
    with pytest.raises(InvalidWebhook):
        gateway.construct_event(payload, sign(payload))


def test_localstripe_webhooks_verify_and_carry_the_outcome(
    gateway: StripeGateway, localstripe: LocalStripe, webhook_sink: WebhookSink
) -> None:
    paid = gateway.charge(1500, "eur", card(localstripe, PAYS), META)
    declined = gateway.charge(1500, "eur", card(localstripe, DECLINES), META)

    delivery = webhook_sink.wait_for("payment_intent.succeeded", str(paid.payment_intent_id))
    event = gateway.construct_event(delivery.body, delivery.signature)
    assert event.payment_outcome() == paid
    assert isinstance(event.data_object["latest_charge"], dict)  # Stripe sends an id

    delivery = webhook_sink.wait_for("payment_intent.payment_failed", str(declined.payment_intent_id))
    failed = gateway.construct_event(delivery.body, delivery.signature).payment_outcome()
    assert failed is not None
    assert (failed.status, failed.failure_message) == ("failed", "Your card was declined.")


# --- Unavailable service -----------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_refused_is_a_gateway_error() -> None:
    with StripeGateway(SECRET_KEY, f"http://127.0.0.1:{closed_port()}", WEBHOOK_SECRET, 1, 0) as gw:
        started = time.monotonic()
        with pytest.raises(GatewayError) as raised:
            gw.charge(100, "eur", "pm_x", META)
    assert time.monotonic() - started < 2
    assert raised.value.retryable
    assert "could not be reached" in str(raised.value)


def test_a_silent_server_times_out_as_a_gateway_error() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        api_base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with StripeGateway(SECRET_KEY, api_base, WEBHOOK_SECRET, 0.5, max_network_retries=0) as gw:
            started = time.monotonic()
            with pytest.raises(GatewayError) as raised:
                gw.create_setup_intent(META)
    assert time.monotonic() - started < 2
    assert raised.value.retryable


def test_a_bad_api_key_is_a_gateway_error_not_worth_retrying(localstripe: LocalStripe) -> None:
    with StripeGateway("not_a_secret_key", localstripe.url, WEBHOOK_SECRET) as gw:
        with pytest.raises(GatewayError) as raised:
            gw.create_setup_intent(META)
    assert not raised.value.retryable

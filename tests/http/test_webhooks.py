"""POST /stripe/webhook: signature verified, each event once, any order."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund import ledger
from crowdfund.films.states import FilmState
from crowdfund.funding.models import FilmInventory, Order, OrderStatus
from crowdfund.payments.localstripe_server import confirm_card_setup, register_webhook
from crowdfund.payments.services import StripeEvent
from tests.conftest import CheckSession, Client
from tests.factories import DECLINED_CARD, GOOD_CARD, hold, make_film, make_studio_user, make_user
from tests.localstripe_fixture import WEBHOOK_SECRET


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event(event_id: str, event_type: str, intent_id: str, status: str, metadata: dict | None = None) -> bytes:
    return json.dumps({
        "id": event_id, "object": "event", "type": event_type, "created": int(time.time()),
        "data": {"object": {"id": intent_id, "object": "payment_intent", "status": status,
                            "amount": 10_000, "currency": "usd", "metadata": metadata or {}}},
    }).encode()


def post(client: Client, payload: bytes, signature: str | None = None):  # type: ignore[no-untyped-def]
    return client.post("/stripe/webhook", data=payload, content_type="application/json",
                       headers={"Stripe-Signature": signature if signature is not None else sign(payload)})


def charged_but_unrecorded(db: CheckSession, app: Flask, card: str = GOOD_CARD) -> Order:
    """Stripe charged the card; the server died before recording the outcome."""
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, stake_cap=10, per_backer_limit=5,
                     funding_goal_cents=50_000)
    order = hold(db, make_user(db), film, 2)
    gateway = app.extensions["crowdfund.gateway"]
    setup = gateway.create_setup_intent({})
    confirm_card_setup(app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], setup.client_secret, card)
    method = gateway.retrieve_setup_intent(setup.id)
    intent_id = gateway.create_payment_intent(order.amount_cents, "usd", {"order_id": str(order.id)},
                                              payment_method_id=method)
    order.stripe_payment_intent_id = intent_id
    db.commit()
    gateway.confirm_payment_intent(intent_id, method)
    return order


def state(db: CheckSession, order: Order) -> tuple[str, int, int]:
    db.reread()
    current = db.get(Order, order.id)
    return current.status, db.get(FilmInventory, current.film_id).sold, ledger.balance(db, ledger.BACKER_CASH)


def test_signed_event_settles_once_however_often_it_comes(client: Client, db: CheckSession, app: Flask) -> None:
    order = charged_but_unrecorded(db, app)
    payload = event("evt_paid_1", "payment_intent.succeeded", order.stripe_payment_intent_id, "succeeded")
    for _ in range(5):
        assert post(client, payload).status_code == 200
    # The same news under another event id (Stripe retries send the same id; be safe anyway).
    other = event("evt_paid_2", "payment_intent.succeeded", order.stripe_payment_intent_id, "succeeded")
    assert post(client, other).status_code == 200
    assert state(db, order) == (OrderStatus.PAID, 2, 10_000)
    assert db.scalar(select(func.count()).select_from(StripeEvent)) == 2
    assert ledger.trial_balance(db) == 0


def test_out_of_order_failure_after_success_changes_nothing(client: Client, db: CheckSession, app: Flask) -> None:
    order = charged_but_unrecorded(db, app)
    intent = order.stripe_payment_intent_id
    assert post(client, event("evt_a", "payment_intent.succeeded", intent, "succeeded")).status_code == 200
    late_failure = event("evt_b", "payment_intent.payment_failed", intent, "requires_payment_method")
    assert post(client, late_failure).status_code == 200
    assert state(db, order) == (OrderStatus.PAID, 2, 10_000)


def test_failure_event_releases_the_hold(client: Client, db: CheckSession, app: Flask) -> None:
    order = charged_but_unrecorded(db, app, DECLINED_CARD)
    payload = event("evt_f", "payment_intent.payment_failed", order.stripe_payment_intent_id, "requires_payment_method")
    assert post(client, payload).status_code == 200
    db.reread()
    assert db.get(Order, order.id).status == OrderStatus.FAILED
    assert db.get(FilmInventory, order.film_id).held == 0


@pytest.mark.parametrize("signature", [
    "t=1,v1=deadbeef",
    "",
    "garbage",
    "forged-with-another-secret",
    "stale",
])
def test_forged_or_stale_signature_is_refused_and_changes_nothing(
        client: Client, db: CheckSession, app: Flask, signature: str) -> None:
    order = charged_but_unrecorded(db, app)
    payload = event("evt_forged", "payment_intent.succeeded", order.stripe_payment_intent_id, "succeeded")
    if signature == "forged-with-another-secret":
        signature = sign(payload, secret="whsec_not_ours")
    elif signature == "stale":
        signature = sign(payload, at=int(time.time()) - 3600)
    assert post(client, payload, signature).status_code == 400
    assert state(db, order)[0] == OrderStatus.PENDING
    assert db.scalar(select(func.count()).select_from(StripeEvent)) == 0


def test_not_json_or_not_an_event_is_refused(client: Client) -> None:
    for payload in (b"not json", b"[]", b'{"id": "evt"}', "ü".encode("latin-1")):
        assert post(client, payload).status_code == 400


def test_real_delivery_from_localstripe(db: CheckSession, app: Flask, live_server: str) -> None:
    """localstripe itself signs and posts payment_intent.succeeded to the app."""
    register_webhook(app.config["STRIPE_API_BASE"], "app", f"{live_server}/stripe/webhook", WEBHOOK_SECRET)
    try:
        order = charged_but_unrecorded(db, app)
        # localstripe posts about a second later; allow for a loaded CI machine.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and state(db, order)[0] != OrderStatus.PAID:
            time.sleep(0.1)
        received = db.scalars(select(StripeEvent.type)).all()
        assert state(db, order) == (OrderStatus.PAID, 2, 10_000), f"events received: {received}"
        assert db.scalar(select(StripeEvent.type)) == "payment_intent.succeeded"
    finally:
        # localstripe cannot forget a webhook: point it at a closed port.
        register_webhook(app.config["STRIPE_API_BASE"], "app", "http://127.0.0.1:9/closed", WEBHOOK_SECRET)


def test_reconcile_settles_a_charge_the_server_never_recorded(db: CheckSession, app: Flask) -> None:
    from crowdfund.payments.services import reconcile

    order = charged_but_unrecorded(db, app)
    gateway = app.extensions["crowdfund.gateway"]
    counts = reconcile(db, gateway, now=datetime.now(UTC))
    assert counts["paid"] == 1
    assert state(db, order) == (OrderStatus.PAID, 2, 10_000)
    again = reconcile(db, gateway, now=datetime.now(UTC))
    assert again["paid"] == 0
    assert state(db, order) == (OrderStatus.PAID, 2, 10_000)

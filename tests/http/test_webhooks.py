"""POST /stripe/webhook: signature verified, each event once, any order."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from crowdfund import ledger
from crowdfund.accounts.models import Role
from crowdfund.dev.localstripe_server import _call as localstripe_call
from crowdfund.dev.localstripe_server import (
    confirm_card_setup,
    create_card_payment_method,
    register_webhook,
)
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import FilmInventory, Order, OrderStatus, RefundState, StripeEvent
from crowdfund.ledger import Account
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, Client
from tests.factories import DECLINED_CARD, GOOD_CARD, PASSWORD, hold, make_film, make_studio_user, make_user
from tests.localstripe_fixture import WEBHOOK_SECRET


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event(event_id: str, event_type: str, intent_id: str, status: str, metadata: dict | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": intent_id,
                    "object": "payment_intent",
                    "status": status,
                    "amount": 10_000,
                    "currency": "usd",
                    "metadata": metadata or {},
                }
            },
        }
    ).encode()


def post(client: Client, payload: bytes, signature: str | None = None):  # type: ignore[no-untyped-def]
    return client.post(
        "/stripe/webhook",
        data=payload,
        content_type="application/json",
        headers={"Stripe-Signature": signature if signature is not None else sign(payload)},
    )


def charged_but_unrecorded(
    db: CheckSession, app: Flask, card: str = GOOD_CARD, order: Order | None = None
) -> Order:
    """Stripe charged the card; the server died before recording the outcome."""
    if order is None:
        film = make_film(
            db,
            make_studio_user(db),
            FilmState.FUNDING,
            stake_cap=10,
            per_backer_limit=5,
            funding_goal_cents=50_000,
        )
        order = hold(db, make_user(db), film, 2)
    gateway = app_services(app).gateway
    setup = gateway.create_setup_intent({})
    confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], setup.client_secret, card
    )
    method = gateway.retrieve_setup_intent(setup.id)
    intent_id = gateway.create_payment_intent(
        order.amount_cents, "usd", {"order_id": str(order.id)}, payment_method_id=method
    )
    order.stripe_payment_intent_id = intent_id
    db.commit()
    gateway.confirm_payment_intent(intent_id, method)
    return order


def state(db: CheckSession, order: Order) -> tuple[str, int, int]:
    db.reread()
    current = db.get(Order, order.id)
    return (
        current.status,
        db.get(FilmInventory, current.film_id).sold,
        ledger.balance(db, Account.BACKER_CASH),
    )


def test_signed_event_settles_once_however_often_it_comes(
    client: Client, db: CheckSession, app: Flask
) -> None:
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


def test_out_of_order_failure_after_success_changes_nothing(
    client: Client, db: CheckSession, app: Flask
) -> None:
    order = charged_but_unrecorded(db, app)
    intent = order.stripe_payment_intent_id
    assert post(client, event("evt_a", "payment_intent.succeeded", intent, "succeeded")).status_code == 200
    late_failure = event("evt_b", "payment_intent.payment_failed", intent, "requires_payment_method")
    assert post(client, late_failure).status_code == 200
    assert state(db, order) == (OrderStatus.PAID, 2, 10_000)


def test_failure_event_releases_the_hold(client: Client, db: CheckSession, app: Flask) -> None:
    order = charged_but_unrecorded(db, app, DECLINED_CARD)
    payload = event(
        "evt_f", "payment_intent.payment_failed", order.stripe_payment_intent_id, "requires_payment_method"
    )
    assert post(client, payload).status_code == 200
    db.reread()
    assert db.get(Order, order.id).status == OrderStatus.FAILED
    assert db.get(FilmInventory, order.film_id).held == 0


@pytest.mark.parametrize(
    "signature",
    [
        "t=1,v1=deadbeef",
        "",
        "garbage",
        "forged-with-another-secret",
        "stale",
    ],
)
def test_forged_or_stale_signature_is_refused_and_changes_nothing(
    client: Client, db: CheckSession, app: Flask, signature: str
) -> None:
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
    # Held before the app hears from localstripe: events of earlier tests' payments
    # may still arrive, and a write of theirs would collide with the hold's
    # read-then-write (this test session's SQLite transactions begin DEFERRED).
    held = held_order(db)
    register_webhook(app.config["STRIPE_API_BASE"], "app", f"{live_server}/stripe/webhook", WEBHOOK_SECRET)
    try:
        # Earlier tests' payments, made less than a second ago, are posted here too
        # (each becomes an anomaly whose money is owed back): let them land first,
        # and count this payment's money from there.
        _wait_until_no_more_events(db)
        before = ledger.balance(db, Account.BACKER_CASH)
        order = charged_but_unrecorded(db, app, order=held)
        # localstripe posts about a second later; allow for a loaded CI machine.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and state(db, order)[0] != OrderStatus.PAID:
            time.sleep(0.1)
        received = db.scalars(select(StripeEvent.type)).all()
        assert state(db, order) == (OrderStatus.PAID, 2, before + 10_000), f"events received: {received}"
        # Stray events of earlier tests' payments may arrive too (localstripe posts them a second later).
        assert "payment_intent.succeeded" in db.scalars(select(StripeEvent.type)).all()
    finally:
        # localstripe cannot forget a webhook: point it at a closed port.
        register_webhook(app.config["STRIPE_API_BASE"], "app", "http://127.0.0.1:9/closed", WEBHOOK_SECRET)
        # Deliveries already scheduled (about a second after each event) still
        # reach the app: let them land now, not in a later test, where the order
        # ids they name (ids restart after each test's truncation) are other orders.
        _wait_until_no_more_events(db)


def _wait_until_no_more_events(db: CheckSession, quiet_seconds: float = 2.0, at_most: float = 15.0) -> None:
    deadline, last_change = time.monotonic() + at_most, time.monotonic()
    seen = -1
    while time.monotonic() < deadline and time.monotonic() - last_change < quiet_seconds:
        db.reread()
        count = db.scalar(select(func.count()).select_from(StripeEvent)) or 0
        if count != seen:
            seen, last_change = count, time.monotonic()
        time.sleep(0.1)


@pytest.mark.parametrize("why", ["stakes-taken", "round-closed"])
def test_a_charge_arriving_after_the_hold_lapsed_and_the_stakes_are_gone_is_refunded(
    client: Client, db: CheckSession, app: Flask, why: str
) -> None:
    """The late-charge branch of settle_success: the card was charged at
    Stripe, but the hold expired before the news arrived and its stakes are
    gone (another fan took them, or the round is over). The money is booked
    and owed back at once, and the refund job returns it through Stripe."""
    from crowdfund.funding.inventory import release_expired_holds
    from crowdfund.workflows.refunds import process_refunds

    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=2,
        per_backer_limit=2,
        funding_goal_cents=10_000,
    )
    now = datetime.now(UTC)
    slow = hold(db, make_user(db), film, 2, now=now - timedelta(minutes=20))
    order = charged_but_unrecorded(db, app, order=slow)
    assert release_expired_holds(db, film.id, now) == 2
    db.commit()
    if why == "stakes-taken":
        hold(db, make_user(db), film, 2, now=now)
    else:
        db.get(Film, film.id).state = FilmState.FAILED
        db.commit()
    assert state(db, order) == (OrderStatus.EXPIRED, 0, 0)

    payload = event("evt_late_1", "payment_intent.succeeded", order.stripe_payment_intent_id, "succeeded")
    assert post(client, payload).status_code == 200
    assert state(db, order) == (OrderStatus.REFUNDED, 0, 10_000)
    late = db.get(Order, order.id)
    assert late.refund_state == RefundState.REQUESTED
    assert ledger.balance(db, Account.refunds_payable(film.id)) == -10_000
    assert ledger.trial_balance(db) == 0
    held = db.get(FilmInventory, film.id)
    assert (held.held, held.sold) == ((2, 0) if why == "stakes-taken" else (0, 0))
    # The same news again (a Stripe retry, or the reconciler) books nothing twice.
    assert (
        post(
            client,
            event("evt_late_2", "payment_intent.succeeded", order.stripe_payment_intent_id, "succeeded"),
        ).status_code
        == 200
    )
    assert state(db, order) == (OrderStatus.REFUNDED, 0, 10_000)

    gateway = app_services(app).gateway
    assert process_refunds(db, gateway, now=datetime.now(UTC)) == 1
    db.reread()
    refunded = db.get(Order, order.id)
    assert refunded.refund_state == RefundState.DONE and refunded.stripe_refund_id
    assert ledger.balance(db, Account.BACKER_CASH) == 0 and ledger.trial_balance(db) == 0
    assert [
        (r.id, r.status, r.amount_cents) for r in gateway.find_refunds(order.stripe_payment_intent_id)
    ] == [(refunded.stripe_refund_id, "succeeded", 10_000)]


def test_reconcile_settles_a_charge_the_server_never_recorded(db: CheckSession, app: Flask) -> None:
    from crowdfund.workflows.reconcile import reconcile

    order = charged_but_unrecorded(db, app)
    gateway = app_services(app).gateway
    counts = reconcile(db, gateway, now=datetime.now(UTC))
    assert counts["paid"] == 1
    assert state(db, order) == (OrderStatus.PAID, 2, 10_000)
    again = reconcile(db, gateway, now=datetime.now(UTC))
    assert again["paid"] == 0
    assert state(db, order) == (OrderStatus.PAID, 2, 10_000)


# --- settle only from the PaymentIntent as Stripe reports it (issue 12, item 2) -----------------


def signed_post(client: Client, event_id: str, event_type: str, intent: dict) -> int:
    payload = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": {"object": "payment_intent", **intent}},
        }
    ).encode()
    return post(client, payload).status_code


def held_order(db: CheckSession, units: int = 2) -> Order:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=50_000,
    )
    return hold(db, make_user(db), film, units)


def paid_intent(app: Flask, amount_cents: int, metadata: dict) -> str:
    """A PaymentIntent charged at localstripe, made outside the app's pay step."""
    gateway = app_services(app).gateway
    method = create_card_payment_method(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_SECRET_KEY"], GOOD_CARD
    )
    intent_id = gateway.create_payment_intent(amount_cents, "usd", metadata, payment_method_id=method)
    assert gateway.confirm_payment_intent(intent_id, method).status == "succeeded"
    return intent_id


def anomalies(db: CheckSession) -> list[dict]:
    db.reread()
    rows = (
        db.execute(
            text(
                "SELECT payment_intent_id, order_id, kind, expected_amount_cents, actual_amount_cents, "
                "state, stripe_refund_id FROM payment_anomalies ORDER BY id"
            )
        )
        .mappings()
        .all()
    )
    return [dict(row) for row in rows]


def test_a_signed_success_event_for_an_unpaid_intent_leaves_the_order_pending(
    client: Client, db: CheckSession, app: Flask
) -> None:
    order = held_order(db)
    gateway = app_services(app).gateway
    # Recorded on the order but never paid: localstripe has it in requires_payment_method.
    intent_id = gateway.create_payment_intent(order.amount_cents, "usd", {"order_id": str(order.id)})
    order.stripe_payment_intent_id = intent_id
    db.commit()
    forged = {
        "id": intent_id,
        "status": "succeeded",
        "amount": order.amount_cents,
        "currency": "usd",
        "metadata": {"order_id": str(order.id), "order_reference": order.reference},
    }
    assert signed_post(client, "evt_forged_success", "payment_intent.succeeded", forged) == 200
    assert state(db, order) == (OrderStatus.PENDING, 0, 0)
    assert db.get(FilmInventory, order.film_id).held == 2
    assert ledger.trial_balance(db) == 0


def test_the_outcome_and_amount_come_from_stripe_not_from_the_event_body(
    client: Client, db: CheckSession, app: Flask
) -> None:
    order = charged_but_unrecorded(db, app)
    # The body claims a failure of one cent; Stripe has the order's full amount, succeeded.
    body = {
        "id": order.stripe_payment_intent_id,
        "status": "requires_payment_method",
        "amount": 1,
        "currency": "usd",
        "last_payment_error": {"message": "Your card was declined."},
    }
    assert signed_post(client, "evt_lying_failure", "payment_intent.payment_failed", body) == 200
    assert state(db, order) == (OrderStatus.PAID, 2, 10_000)
    assert anomalies(db) == []


@pytest.mark.parametrize("case", ["smaller-amount", "order-has-another-intent"])
def test_an_intent_that_does_not_match_its_order_is_an_anomaly_and_refunded(
    client: Client, db: CheckSession, app: Flask, mail, jobs, case: str
) -> None:
    order = held_order(db)
    gateway = app_services(app).gateway
    metadata = {"order_id": str(order.id), "order_reference": order.reference}
    if case == "smaller-amount":
        intent_id = paid_intent(app, order.amount_cents // 2, metadata)
    else:
        order.stripe_payment_intent_id = gateway.create_payment_intent(order.amount_cents, "usd", metadata)
        db.commit()
        intent_id = paid_intent(app, order.amount_cents, metadata)
    # The body says what the order would want; Stripe says otherwise.
    claimed = {
        "id": intent_id,
        "status": "succeeded",
        "amount": order.amount_cents,
        "currency": "usd",
        "metadata": metadata,
    }
    assert signed_post(client, "evt_mismatch_1", "payment_intent.succeeded", claimed) == 200
    assert signed_post(client, "evt_mismatch_2", "payment_intent.succeeded", claimed) == 200  # news again
    assert state(db, order)[:2] == (OrderStatus.PENDING, 0)
    [anomaly] = anomalies(db)
    actual = order.amount_cents // 2 if case == "smaller-amount" else order.amount_cents
    assert anomaly["payment_intent_id"] == intent_id and anomaly["order_id"] == order.id
    assert anomaly["kind"] == ("amount_mismatch" if case == "smaller-amount" else "order_has_another_intent")
    assert (anomaly["expected_amount_cents"], anomaly["actual_amount_cents"]) == (order.amount_cents, actual)
    # The webhook only records it; a worker refunds it after the commit, once.
    assert anomaly["state"] == "refund_owed" and gateway.find_refunds(intent_id) == []
    assert [(o.kind, o.result) for o in jobs.run()] == [("refunds.anomaly", "done")]
    [anomaly] = anomalies(db)
    assert anomaly["state"] == "refunded"
    # Refunded once, in full, at Stripe; the ledger saw the money come and go.
    [refund] = gateway.find_refunds(intent_id)
    assert (refund.id, refund.amount_cents) == (anomaly["stripe_refund_id"], actual)
    assert (
        ledger.balance(db, Account.BACKER_CASH) == 0 and ledger.balance(db, Account.UNMATCHED_PAYMENTS) == 0
    )
    assert ledger.trial_balance(db) == 0
    assert not [
        m for m in mail.messages if order.reference in str(m["Subject"])
    ]  # no receipt: nothing was bought


def test_the_finance_page_shows_payment_anomalies(client: Client, db: CheckSession, app: Flask, jobs) -> None:  # type: ignore[no-untyped-def]
    order = held_order(db)
    intent_id = paid_intent(app, 1234, {"order_id": str(order.id), "order_reference": order.reference})
    body = {"id": intent_id, "status": "succeeded", "amount": order.amount_cents, "currency": "usd"}
    assert signed_post(client, "evt_mismatch_page", "payment_intent.succeeded", body) == 200
    jobs.run()
    finance = make_user(db, roles=(Role.FINANCE,))
    client.login(finance.email, PASSWORD)
    page = client.get("/finance/").get_data(as_text=True)
    assert "Payment anomalies" in page and intent_id in page and order.reference in page
    assert "$12.34" in page and "$100.00" in page and "Refunded" in page


def test_reconcile_refunds_a_recorded_intent_whose_amount_changed_at_stripe(
    db: CheckSession, app: Flask
) -> None:
    from crowdfund.workflows.reconcile import reconcile

    order = held_order(db)
    gateway = app_services(app).gateway
    base, secret = app.config["STRIPE_API_BASE"], app.config["STRIPE_SECRET_KEY"]
    method = create_card_payment_method(base, secret, GOOD_CARD)
    intent_id = gateway.create_payment_intent(
        order.amount_cents, "usd", {"order_id": str(order.id)}, payment_method_id=method
    )
    order.stripe_payment_intent_id = intent_id
    db.commit()
    # Someone with the API key lowered the amount before the charge.
    localstripe_call("POST", f"{base}/v1/payment_intents/{intent_id}", {"amount": 100}, secret)
    assert gateway.confirm_payment_intent(intent_id, method).status == "succeeded"
    reconcile(db, gateway, now=datetime.now(UTC))
    assert state(db, order)[:2] == (OrderStatus.PENDING, 0)
    [anomaly] = anomalies(db)
    assert (anomaly["kind"], anomaly["actual_amount_cents"], anomaly["state"]) == (
        "amount_mismatch",
        100,
        "refunded",
    )
    assert [r.amount_cents for r in gateway.find_refunds(intent_id)] == [100]
    reconcile(db, gateway, now=datetime.now(UTC))
    assert len(gateway.find_refunds(intent_id)) == 1
    assert ledger.trial_balance(db) == 0 and ledger.balance(db, Account.BACKER_CASH) == 0


# --- signature timestamps and the body-size cap ------------------------------------------------


def test_a_signature_from_the_future_is_refused(client: Client, db: CheckSession, app: Flask) -> None:
    order = charged_but_unrecorded(db, app)
    payload = event("evt_future", "payment_intent.succeeded", order.stripe_payment_intent_id, "succeeded")
    assert post(client, payload, sign(payload, at=int(time.time()) + 600)).status_code == 400
    assert state(db, order)[0] == OrderStatus.PENDING
    assert db.scalar(select(func.count()).select_from(StripeEvent)) == 0


def test_the_size_cap_holds_for_a_chunked_body(db: CheckSession, live_server: str) -> None:
    from crowdfund.site.webhooks import MAX_WEBHOOK_BYTES

    # Correctly signed and a Stripe event in form: only its size is wrong.
    payload = json.dumps(
        {
            "id": "evt_huge",
            "object": "event",
            "type": "customer.updated",
            "created": int(time.time()),
            "data": {"object": {"object": "customer", "padding": "x" * MAX_WEBHOOK_BYTES}},
        }
    ).encode()
    host, port = live_server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", "/stripe/webhook")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Stripe-Signature", sign(payload))
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for start in range(0, len(payload), 64 * 1024):
            chunk = payload[start : start + 64 * 1024]
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        assert response.status == 413
    finally:
        connection.close()
    db.reread()
    assert db.scalar(select(func.count()).select_from(StripeEvent)) == 0


def test_a_non_ascii_digit_in_the_intents_order_id_is_an_anomaly_not_a_500(
    client: Client, db: CheckSession, app: Flask
) -> None:
    order = held_order(db)
    # "²" passes str.isdigit() but int() refuses it.
    intent_id = paid_intent(
        app, order.amount_cents, {"order_id": "\u00b2", "order_reference": order.reference}
    )
    body = {"id": intent_id, "status": "succeeded", "amount": order.amount_cents, "currency": "usd"}
    assert signed_post(client, "evt_superscript_id", "payment_intent.succeeded", body) == 200
    assert state(db, order)[:2] == (OrderStatus.PENDING, 0)
    assert [a["payment_intent_id"] for a in anomalies(db)] == [intent_id]

"""Buying stakes through HTTP: hold, checkout, pay, receipt, cancel, idempotency."""

import re
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund.accounts.models import Role
from crowdfund.dev.localstripe_server import confirm_card_setup
from crowdfund.films.models import Film
from crowdfund.films.services import cancel_film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import FilmInventory, Order, OrderStatus
from crowdfund.ledger import Account
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, Client
from tests.factories import (
    DECLINED_CARD,
    GOOD_CARD,
    PASSWORD,
    THREE_DS_CARD,
    make_film,
    make_studio_user,
    make_user,
)


@pytest.fixture
def fan(db: CheckSession, client: Client):  # type: ignore[no-untyped-def]
    user = make_user(db, "buyer@example.com", name="Bo Buyer")
    client.login(user.email, PASSWORD)
    return user


def form_key(page: str) -> str:
    return re.search(r'name="key" value="([^"]+)"', page).group(1)


def hold_via_form(client: Client, film, units: int = 2):  # type: ignore[no-untyped-def]
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    key = form_key(page)
    return client.post_form(f"/films/{film.slug}/hold", {"units": str(units), "key": key}), key


def checkout_secret(client: Client, location: str) -> str:
    page = client.get(location).get_data(as_text=True)
    return re.search(r'data-client-secret="([^"]+)"', page).group(1)


def test_buy_pay_receipt_and_portfolio(client: Client, db: CheckSession, app: Flask, film, fan, mail) -> None:  # type: ignore[no-untyped-def]
    response, _ = hold_via_form(client, film, 2)
    assert response.status_code == 303 and "/checkout" in response.headers["Location"]
    checkout = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "2 × $50.00" in checkout and "$100.00" in checkout and "You may cancel until" in checkout
    secret = re.search(r'data-client-secret="([^"]+)"', checkout).group(1)
    setup = confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, GOOD_CARD
    )
    pay_url = response.headers["Location"].replace("/checkout", "/pay")
    paid = client.post_form(pay_url, {"setup_intent": setup["id"]})
    assert paid.status_code == 303
    receipt = client.get(paid.headers["Location"]).get_data(as_text=True)
    assert "Receipt" in receipt and "Paid" in receipt and "$100.00" in receipt and "Cancel order" in receipt
    portfolio = client.get("/portfolio").get_data(as_text=True)
    assert "Night Ferry" in portfolio and "100%" in portfolio and "(2 of 2 paid stakes)" in portfolio
    public = client.get(f"/films/{film.slug}").get_data(as_text=True)
    assert "$100.00</strong> raised of $500.00 (20%)" in public and "<strong>1</strong> backer" in public
    assert len(mail.to("buyer@example.com")) == 1
    # Paying again (a retried POST, the back button) charges nothing more.
    again = client.post_form(pay_url, {"setup_intent": setup["id"]})
    assert again.status_code == 303
    db.reread()
    assert db.scalar(select(func.count()).select_from(Order)) == 1
    assert db.get(FilmInventory, film.id).sold == 2
    assert len(mail.to("buyer@example.com")) == 1


def test_double_submitted_hold_form_makes_one_order(client: Client, db: CheckSession, film, fan) -> None:  # type: ignore[no-untyped-def]
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    key = form_key(page)
    first = client.post_form(f"/films/{film.slug}/hold", {"units": "2", "key": key})
    second = client.post_form(f"/films/{film.slug}/hold", {"units": "2", "key": key})
    assert first.headers["Location"] == second.headers["Location"]
    db.reread()
    assert db.scalar(select(func.count()).select_from(Order)) == 1
    assert db.get(FilmInventory, film.id).held == 2


def test_declined_card_message_and_hold_released(
    client: Client, db: CheckSession, app: Flask, film, fan
) -> None:  # type: ignore[no-untyped-def]
    response, _ = hold_via_form(client, film, 3)
    secret = checkout_secret(client, response.headers["Location"])
    setup = confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, DECLINED_CARD
    )
    result = client.post_form(
        response.headers["Location"].replace("/checkout", "/pay"),
        {"setup_intent": setup["id"]},
        follow_redirects=True,
    )
    text = result.get_data(as_text=True)
    assert "Your card was declined." in text and "hold was released" in text
    db.reread()
    assert db.get(FilmInventory, film.id).held == 0
    assert db.scalar(select(Order.status)) == OrderStatus.FAILED


def test_three_d_secure_asks_the_browser_then_settles(
    client: Client, db: CheckSession, app: Flask, film, fan
) -> None:  # type: ignore[no-untyped-def]
    from crowdfund.dev.localstripe_server import confirm_card_payment

    response, _ = hold_via_form(client, film, 1)
    secret = checkout_secret(client, response.headers["Location"])
    base, pk = app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"]
    setup = confirm_card_setup(base, pk, secret, THREE_DS_CARD)
    pay_url = response.headers["Location"].replace("/checkout", "/pay")
    asked = client.post_form(pay_url, {"setup_intent": setup["id"]})
    assert asked.status_code == 200
    action_secret = re.search(r'data-action-secret="([^"]+)"', asked.get_data(as_text=True)).group(1)
    confirm_card_payment(base, pk, action_secret, success=True)
    done = client.post_form(pay_url, {})
    assert done.status_code == 303
    db.reread()
    assert db.scalar(select(Order.status)) == OrderStatus.PAID


def test_other_users_cannot_see_or_touch_an_order(
    client: Client, other_client: Client, db: CheckSession, film, fan
) -> None:  # type: ignore[no-untyped-def]
    response, _ = hold_via_form(client, film, 1)
    reference = response.headers["Location"].split("/")[2]
    intruder = make_user(db)
    other_client.login(intruder.email, PASSWORD)
    for url in (f"/orders/{reference}", f"/orders/{reference}/checkout"):
        assert other_client.get(url).status_code == 404
    for url in (f"/orders/{reference}/pay", f"/orders/{reference}/cancel"):
        assert other_client.post_form(url, {}).status_code == 404


def test_bad_quantities_come_back_with_a_message(client: Client, db: CheckSession, film, fan) -> None:  # type: ignore[no-untyped-def]
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    key = form_key(page)
    for units in ("0", "6", "-1", "abc", "", "9" * 30):
        response = client.post_form(
            f"/films/{film.slug}/hold", {"units": units, "key": key}, follow_redirects=True
        )
        assert response.status_code == 200
        assert "Choose" in response.get_data(as_text=True)
    db.reread()
    assert db.scalar(select(func.count()).select_from(Order)) == 0


def test_cancel_refunds_and_returns_units(
    client: Client, db: CheckSession, app: Flask, film, fan, jobs
) -> None:  # type: ignore[no-untyped-def]
    response, _ = hold_via_form(client, film, 2)
    secret = checkout_secret(client, response.headers["Location"])
    setup = confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, GOOD_CARD
    )
    paid = client.post_form(
        response.headers["Location"].replace("/checkout", "/pay"), {"setup_intent": setup["id"]}
    )
    order_url = paid.headers["Location"]
    cancelled = client.post_form(order_url + "/cancel", follow_redirects=True).get_data(as_text=True)
    # The request only records the refund; Stripe is asked by a worker after commit.
    assert "Order cancelled" in cancelled and "Refund requested" in cancelled
    assert app_services(app).gateway.find_refunds(db.scalar(select(Order.stripe_payment_intent_id))) == []
    again = client.post_form(order_url + "/cancel", follow_redirects=True)
    assert again.status_code == 200
    assert [outcome.result for outcome in jobs.run()] == ["done"]
    assert "Refund done" in client.get(order_url).get_data(as_text=True)
    assert jobs.run() == []
    db.reread()
    order = db.scalar(select(Order))
    assert order.status == OrderStatus.CANCELLED
    assert db.get(FilmInventory, film.id).sold == 0
    refunds = app_services(app).gateway.find_refunds(order.stripe_payment_intent_id)
    assert len(refunds) == 1


def test_large_limits_get_a_number_field_not_a_thousand_options(client: Client, db: CheckSession) -> None:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=5000,
        per_backer_limit=1000,
        funding_goal_cents=100_000,
    )
    client.login(make_user(db).email, PASSWORD)
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    assert 'type="number" min="1" max="1000"' in page and "<option" not in page.split('id="units"')[1][:200]
    key = form_key(page)
    response = client.post_form(f"/films/{film.slug}/hold", {"units": "250", "key": key})
    assert response.status_code == 303


def test_a_film_cancelled_during_the_sale_takes_no_more_holds(
    client: Client, db: CheckSession, film, fan
) -> None:  # type: ignore[no-untyped-def]
    """The app keeps a selling film's terms for a moment (HoldTermsCache); the
    next hold after an admin cancels the film must still be refused."""
    first, _ = hold_via_form(client, film, 1)
    assert first.status_code == 303 and "/checkout" in first.headers["Location"]
    open_form_key = form_key(client.get(f"/films/{film.slug}").get_data(as_text=True))
    admin = make_user(db, "admin@example.com", roles=(Role.ADMIN,))
    cancel_film(db, db.get(Film, film.id), admin, "Rights dispute", now=datetime.now(UTC))
    db.commit()
    # A fan whose page still shows the buy form submits it.
    response = client.post_form(f"/films/{film.slug}/hold", {"units": "2", "key": open_form_key})
    assert response.status_code == 303 and response.headers["Location"].endswith("#buy")
    assert "not open for funding" in client.get(response.headers["Location"]).get_data(as_text=True)
    db.reread()
    assert db.scalar(select(func.count()).select_from(Order)) == 1
    assert db.get(FilmInventory, film.id).held == 1


# --- one SetupIntent per order and user (issue 12, item 3) ---------------------------------------


def localstripe_objects(app: Flask, kind: str) -> list[dict]:
    """Every object of `kind` ("payment_intents", "setup_intents") localstripe holds."""
    from crowdfund.dev.localstripe_server import _call

    found: list[dict] = []
    query = "limit=100"
    while True:
        page = _call(
            "GET",
            f"{app.config['STRIPE_API_BASE']}/v1/{kind}?{query}",
            secret_key=app.config["STRIPE_SECRET_KEY"],
        )
        found.extend(page["data"])
        if not page.get("has_more") or not page["data"]:
            return found
        query = f"limit=100&starting_after={page['data'][-1]['id']}"


def test_a_fan_cannot_pay_with_another_fans_card(
    client: Client, other_client: Client, db: CheckSession, app: Flask, film, fan
) -> None:  # type: ignore[no-untyped-def]
    # Fan A sets up a card for their own order.
    response, _ = hold_via_form(client, film, 1)
    secret = checkout_secret(client, response.headers["Location"])
    base, pk = app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"]
    setup_of_a = confirm_card_setup(base, pk, secret, GOOD_CARD)
    # Fan B opens their own checkout, then posts A's SetupIntent to pay.
    fan_b = make_user(db, "other-buyer@example.com")
    other_client.login(fan_b.email, PASSWORD)
    held_b, _ = hold_via_form(other_client, film, 2)
    checkout_secret(other_client, held_b.headers["Location"])
    intents_before = len(localstripe_objects(app, "payment_intents"))
    refused = other_client.post_form(
        held_b.headers["Location"].replace("/checkout", "/pay"),
        {"setup_intent": setup_of_a["id"]},
        follow_redirects=True,
    )
    assert refused.status_code == 200
    assert "This card was not set up for this order" in refused.get_data(as_text=True)
    # Nothing charged: no PaymentIntent was even created, with A's card or any other.
    assert len(localstripe_objects(app, "payment_intents")) == intents_before
    db.reread()
    order_b = db.scalar(select(Order).where(Order.user_id == fan_b.id))
    assert order_b.status == OrderStatus.PENDING and order_b.stripe_payment_intent_id is None
    assert ledger_cash(db) == 0
    # A's own payment still works with A's card.
    paid = client.post_form(
        response.headers["Location"].replace("/checkout", "/pay"), {"setup_intent": setup_of_a["id"]}
    )
    assert paid.status_code == 303
    db.reread()
    assert db.scalar(select(Order.status).where(Order.user_id == fan.id)) == OrderStatus.PAID


def test_pay_refuses_a_setup_intent_stripe_says_belongs_to_another_order(
    client: Client, db: CheckSession, app: Flask, film, fan
) -> None:  # type: ignore[no-untyped-def]
    response, _ = hold_via_form(client, film, 1)
    gateway = app_services(app).gateway
    # Recorded on this order, but made for another order and user (as a tampered database might hold).
    foreign = gateway.create_setup_intent({"order_id": "999999", "user_id": "999999"})
    confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], foreign.client_secret, GOOD_CARD
    )
    db.reread()
    order = db.scalar(select(Order))
    order.stripe_setup_intent_id = foreign.id
    db.commit()
    refused = client.post_form(
        response.headers["Location"].replace("/checkout", "/pay"),
        {"setup_intent": foreign.id},
        follow_redirects=True,
    )
    assert "This card was not set up for this order" in refused.get_data(as_text=True)
    db.reread()
    assert db.get(Order, order.id).stripe_payment_intent_id is None


def test_reloading_the_checkout_reuses_the_orders_setup_intent(
    client: Client, db: CheckSession, app: Flask, film, fan
) -> None:  # type: ignore[no-untyped-def]
    response, _ = hold_via_form(client, film, 1)
    secrets = {checkout_secret(client, response.headers["Location"]) for _ in range(3)}
    db.reread()
    order = db.scalar(select(Order))
    made = [
        s
        for s in localstripe_objects(app, "setup_intents")
        if s["metadata"].get("order_reference") == order.reference
    ]
    assert len(made) == 1 and len(secrets) == 1
    assert order.stripe_setup_intent_id == made[0]["id"]
    assert made[0]["metadata"] == {
        "order_id": str(order.id),
        "order_reference": order.reference,
        "user_id": str(fan.id),
    }
    # A SetupIntent that can no longer collect a card (here: canceled) is replaced, once.
    app_services(app).gateway.cancel_setup_intent(order.stripe_setup_intent_id)
    replaced = {checkout_secret(client, response.headers["Location"]) for _ in range(2)}
    assert len(replaced) == 1 and replaced != secrets
    db.reread()
    assert db.get(Order, order.id).stripe_setup_intent_id != made[0]["id"]


def ledger_cash(db: CheckSession) -> int:
    from crowdfund import ledger

    return ledger.balance(db, Account.BACKER_CASH)

"""Holds as a fan meets them (issue 12, items 4 and 14): the back button with
another quantity, one pending order per film, releasing a hold, and lapsed
holds that never offer "Continue to payment"."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund.dev.localstripe_server import confirm_card_setup
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, OrderStatus
from tests.conftest import CheckSession, Client
from tests.factories import GOOD_CARD, PASSWORD, THREE_DS_CARD, make_user


@pytest.fixture
def fan(db: CheckSession, client: Client):  # type: ignore[no-untyped-def]
    user = make_user(db, "holder@example.com", name="Hal Holder")
    client.login(user.email, PASSWORD)
    return user


def film_page(client: Client, film) -> str:  # type: ignore[no-untyped-def]
    return client.get(f"/films/{film.slug}").get_data(as_text=True)


def form_key(page: str) -> str:
    return re.search(r'name="key" value="([^"]+)"', page).group(1)


def remaining(page: str) -> int:
    return int(re.search(r"(\d+) left\.", page).group(1))


def post_hold(client: Client, film, units: int, key: str):  # type: ignore[no-untyped-def]
    return client.post_form(f"/films/{film.slug}/hold", {"units": str(units), "key": key})


def counters(db: CheckSession, film_id: int, user_id: int) -> tuple[int, int, int]:
    db.reread()
    inventory = db.get(FilmInventory, film_id)
    position = (
        db.scalar(
            select(BackerPosition.units).where(
                BackerPosition.film_id == film_id, BackerPosition.user_id == user_id
            )
        )
        or 0
    )
    return inventory.sold, inventory.held, position


def pay_with(client: Client, app: Flask, checkout_url: str, card: str):  # type: ignore[no-untyped-def]
    page = client.get(checkout_url).get_data(as_text=True)
    secret = re.search(r'data-client-secret="([^"]+)"', page).group(1)
    setup = confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, card
    )
    return client.post_form(checkout_url.replace("/checkout", "/pay"), {"setup_intent": setup["id"]})


# --- item 4: the same form back with another quantity ---------------------------------


def test_back_button_with_another_quantity_holds_the_new_quantity(
    client: Client, db: CheckSession, film, fan
) -> None:  # type: ignore[no-untyped-def]
    """Chose 5, went Back, chose 3: the order is for 3, the 5 are given back."""
    key = form_key(film_page(client, film))
    five = post_hold(client, film, 5, key)
    assert "5 × $50.00" in client.get(five.headers["Location"]).get_data(as_text=True)
    three = post_hold(client, film, 3, key)
    assert three.status_code == 303 and three.headers["Location"] != five.headers["Location"]
    checkout = client.get(three.headers["Location"]).get_data(as_text=True)
    assert "3 × $50.00" in checkout and "$150.00" in checkout and "$250.00" not in checkout
    assert counters(db, film.id, fan.id) == (0, 3, 3)
    orders = db.scalars(select(Order).order_by(Order.id)).all()
    assert [(o.units, o.status) for o in orders] == [(5, OrderStatus.EXPIRED), (3, OrderStatus.PENDING)]
    # The same form once more with 3 (a double click) is the same order.
    again = post_hold(client, film, 3, key)
    assert again.headers["Location"] == three.headers["Location"]
    assert db.scalar(select(func.count()).select_from(Order)) == 2


def test_back_button_after_paying_never_charges_for_the_other_quantity(
    client: Client, db: CheckSession, app: Flask, film, fan
) -> None:  # type: ignore[no-untyped-def]
    key = form_key(film_page(client, film))
    held = post_hold(client, film, 2, key)
    assert pay_with(client, app, held.headers["Location"], GOOD_CARD).status_code == 303
    back = post_hold(client, film, 4, key)
    assert back.status_code == 303 and back.headers["Location"].endswith("#buy")
    page = client.get(back.headers["Location"]).get_data(as_text=True)
    assert "This form already bought 2 stakes" in page and "Nothing else was ordered" in page
    assert counters(db, film.id, fan.id) == (2, 0, 2)
    assert db.scalar(select(func.count()).select_from(Order)) == 1


def test_back_button_while_the_payment_is_under_way_leaves_it_alone(
    client: Client, db: CheckSession, app: Flask, film, fan
) -> None:  # type: ignore[no-untyped-def]
    key = form_key(film_page(client, film))
    held = post_hold(client, film, 2, key)
    asked = pay_with(
        client, app, held.headers["Location"], THREE_DS_CARD
    )  # 3-D Secure: pending, intent recorded
    assert asked.status_code == 200
    back = post_hold(client, film, 1, key)
    page = client.get(back.headers["Location"]).get_data(as_text=True)
    assert "is paying for 2 stakes" in page
    db.reread()
    order = db.scalar(select(Order))
    assert (order.units, order.status) == (2, OrderStatus.PENDING) and order.stripe_payment_intent_id
    assert db.scalar(select(func.count()).select_from(Order)) == 1
    # A new form while that payment is under way is refused too, pointing to the order.
    refused = post_hold(client, film, 1, form_key(film_page(client, film)))
    page = client.get(refused.headers["Location"]).get_data(as_text=True)
    assert f"Your payment for order {order.reference} is still being processed" in page
    assert counters(db, film.id, fan.id) == (0, 2, 2)


# --- item 14: one pending order per film; releasing; lapsed holds ----------------------


def test_holding_again_replaces_the_hold_instead_of_hoarding(
    client: Client, db: CheckSession, film, fan
) -> None:  # type: ignore[no-untyped-def]
    """The hoarding pattern reduced to one fan: holding again and again (each
    time from a fresh page) never holds more than the latest choice."""
    for units in (5, 5, 4, 5):
        response = post_hold(client, film, units, form_key(film_page(client, film)))
        assert response.status_code == 303 and "/checkout" in response.headers["Location"]
        assert counters(db, film.id, fan.id) == (0, units, units)
    statuses = db.scalars(select(Order.status).order_by(Order.id)).all()
    assert statuses == ["expired", "expired", "expired", "pending"]
    page = film_page(client, film)
    assert remaining(page) == 15 and "You hold <strong>5</strong> stakes" in page
    assert "Choosing again below replaces this hold" in page


def test_release_button_gives_the_stakes_back_at_once(
    client: Client, other_client: Client, db: CheckSession, film, fan
) -> None:  # type: ignore[no-untyped-def]
    held = post_hold(client, film, 3, form_key(film_page(client, film)))
    checkout_url = held.headers["Location"]
    reference = checkout_url.split("/")[2]
    assert remaining(film_page(client, film)) == 17
    checkout = client.get(checkout_url).get_data(as_text=True)
    assert f'action="/orders/{reference}/release"' in checkout
    # Only the owner, only with a CSRF token.
    intruder = make_user(db)
    other_client.login(intruder.email, PASSWORD)
    assert other_client.post_form(f"/orders/{reference}/release").status_code == 404
    assert client.post(f"/orders/{reference}/release").status_code == 400
    assert counters(db, film.id, fan.id) == (0, 3, 3)
    released = client.post_form(f"/orders/{reference}/release")
    assert released.status_code == 303
    page = client.get(released.headers["Location"]).get_data(as_text=True)
    assert "Your hold of 3 stakes is released." in page and remaining(page) == 20
    assert counters(db, film.id, fan.id) == (0, 0, 0)
    assert db.scalar(select(Order.status)) == OrderStatus.EXPIRED
    # Twice is harmless, and the order can no longer be paid.
    assert client.post_form(f"/orders/{reference}/release").status_code == 303
    assert counters(db, film.id, fan.id) == (0, 0, 0)
    assert "/checkout" not in client.get(checkout_url).headers.get("Location", "/checkout")


def test_a_lapsed_hold_never_offers_continue_to_payment(
    client: Client, db: CheckSession, clock, film, fan
) -> None:  # type: ignore[no-untyped-def]
    start = datetime.now(UTC)
    clock.set(start)
    held = post_hold(client, film, 2, form_key(film_page(client, film)))
    reference = held.headers["Location"].split("/")[2]
    order_url = f"/orders/{reference}"
    assert "Continue to payment" in client.get(order_url).get_data(as_text=True)
    assert "Continue to payment" in client.get("/portfolio").get_data(as_text=True)
    assert "Continue to payment" in film_page(client, film)

    clock.set(start + timedelta(minutes=16))  # lapsed, not yet released by any job
    db.reread()
    assert db.scalar(select(Order.status)) == OrderStatus.PENDING
    order_page = client.get(order_url).get_data(as_text=True)
    assert "Continue to payment" not in order_page and "Hold expired" in order_page
    assert "Awaiting payment" not in order_page
    portfolio = client.get("/portfolio").get_data(as_text=True)
    assert "Continue to payment" not in portfolio and "Hold expired" in portfolio
    page = film_page(client, film)
    assert "Continue to payment" not in page and "expired before payment" in page
    # Choosing again works and replaces it.
    again = post_hold(client, film, 1, form_key(page))
    assert "/checkout" in again.headers["Location"]
    assert counters(db, film.id, fan.id) == (0, 1, 1)

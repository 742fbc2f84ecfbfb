"""Buying stakes in a real browser, through localstripe's fake Stripe.js."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund.funding.models import FilmInventory, Order, OrderStatus
from tests.browser.conftest import assert_accessible
from tests.factories import (
    DECLINED_CARD,
    GOOD_CARD,
    PASSWORD,
    THREE_DS_CARD,
    make_film,
    make_studio_user,
    make_user,
)

pytestmark = pytest.mark.browser

RECEIPT = re.compile(r"Receipt RS-")


def log_in(page, email: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for()


def fill_card(page, number: str) -> None:  # type: ignore[no-untyped-def]
    card = page.locator("#card-element")
    for placeholder, value in (
        ("number", number),
        ("exp_month", "12"),
        ("exp_year", "30"),
        ("cvc", "123"),
        ("postal_code", "10001"),
    ):
        card.get_by_placeholder(placeholder, exact=True).fill(value)


def open_checkout(page, film, units: int, *, check_a11y: bool = False) -> None:  # type: ignore[no-untyped-def]
    """From the film page, hold `units` stakes and land on the checkout page."""
    page.goto(f"/films/{film.slug}")
    if check_a11y:
        assert_accessible(page)
    page.get_by_label("Number of stakes").select_option(str(units))
    page.get_by_role("button", name="Continue to review").click()
    page.get_by_role("heading", name="Review and pay").wait_for()
    assert re.search(r"/orders/[^/]+/checkout$", page.url), page.url
    page.locator("#card-element").get_by_placeholder("number", exact=True).wait_for()


def only_order(db, user_id: int) -> Order:  # type: ignore[no-untyped-def]
    db.reread()
    return db.scalars(select(Order).where(Order.user_id == user_id)).one()


def inventory(db, film_id: int) -> FilmInventory:  # type: ignore[no-untyped-def]
    db.reread()
    row = db.get(FilmInventory, film_id)
    assert row is not None
    return row


@pytest.fixture
def fan(db: Session):  # type: ignore[no-untyped-def]
    return make_user(db, name="Fay Fan")


@pytest.fixture
def film(db: Session):  # type: ignore[no-untyped-def]
    return make_film(db, make_studio_user(db), title="Checkout Film")  # $50.00 a stake


def test_purchase_with_a_good_card(page, db: Session, fan, film) -> None:  # type: ignore[no-untyped-def]
    log_in(page, fan.email)
    open_checkout(page, film, 2, check_a11y=True)
    assert_accessible(page)
    fill_card(page, GOOD_CARD)
    page.get_by_role("button", name="Pay $100.00").click()

    expect(page.get_by_role("heading", name=RECEIPT)).to_be_visible()
    expect(page.get_by_text("Payment received")).to_be_visible()
    expect(page.locator(".badge")).to_have_text("Paid")

    order = only_order(db, fan.id)
    assert page.url.endswith(f"/orders/{order.reference}")
    assert (order.status, order.units, order.amount_cents) == (OrderStatus.PAID, 2, 10_000)
    assert order.stripe_payment_intent_id and order.paid_at is not None
    stock = inventory(db, film.id)
    assert (stock.sold, stock.held) == (2, 0)


def test_declined_card_releases_the_hold(page, db: Session, fan, film) -> None:  # type: ignore[no-untyped-def]
    log_in(page, fan.email)
    open_checkout(page, film, 1)
    assert inventory(db, film.id).held == 1
    fill_card(page, DECLINED_CARD)
    page.get_by_role("button", name="Pay $50.00").click()

    alert = page.locator(".flash-error")
    expect(alert).to_contain_text("Your card was declined.")
    expect(alert).to_contain_text("hold was released")
    expect(page.get_by_role("heading", name="Checkout Film")).to_be_visible()
    assert page.url.endswith(f"/films/{film.slug}#buy")

    order = only_order(db, fan.id)
    assert order.status == OrderStatus.FAILED
    assert order.failure_message == "Your card was declined."
    stock = inventory(db, film.id)
    assert (stock.sold, stock.held) == (0, 0)


def test_three_d_secure_card(page, db: Session, fan, film) -> None:  # type: ignore[no-untyped-def]
    log_in(page, fan.email)
    open_checkout(page, film, 1)
    fill_card(page, THREE_DS_CARD)
    page.get_by_role("button", name="Pay $50.00").click()

    # Setting the card up asks for authentication...
    page.get_by_role("button", name="Complete authentication").click()
    # ...and so does the charge, on the page the server renders for it.
    page.locator("#action-form").wait_for()
    page.get_by_role("button", name="Complete authentication").click()

    expect(page.get_by_role("heading", name=RECEIPT)).to_be_visible()
    expect(page.get_by_text("Payment received")).to_be_visible()

    order = only_order(db, fan.id)
    assert order.status == OrderStatus.PAID
    stock = inventory(db, film.id)
    assert (stock.sold, stock.held) == (1, 0)


def test_cancel_after_purchase(page, db: Session, fan, film, jobs) -> None:  # type: ignore[no-untyped-def]
    log_in(page, fan.email)
    open_checkout(page, film, 2)
    fill_card(page, GOOD_CARD)
    page.get_by_role("button", name="Pay $100.00").click()
    expect(page.get_by_role("heading", name=RECEIPT)).to_be_visible()
    assert inventory(db, film.id).sold == 2

    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel order ...?" (static/js/confirm.js)
    page.get_by_role("button", name="Cancel order and refund $100.00").click()

    expect(page.get_by_text("Order cancelled")).to_be_visible()
    expect(page.get_by_text("Refund requested")).to_be_visible()
    # A worker carries the refund out after the request committed.
    assert [outcome.result for outcome in jobs.run()] == ["done"]
    page.reload()
    expect(page.get_by_text("Refund done")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Cancel order"))).to_have_count(0)

    order = only_order(db, fan.id)
    assert order.status == OrderStatus.CANCELLED
    assert order.refund_state == "done" and order.stripe_refund_id
    stock = inventory(db, film.id)
    assert (stock.sold, stock.held) == (0, 0)

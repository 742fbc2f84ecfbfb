"""Cancel order and Withdraw ask before they act (static/js/confirm.js: the
CSP allows no inline script). Saying no changes nothing; yes goes ahead."""

from __future__ import annotations

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy.orm import Session

from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order, OrderStatus
from tests.browser.test_purchase import log_in
from tests.factories import buy, make_film, make_studio_user, make_user

pytestmark = pytest.mark.browser


def answer_next_dialog(page, accept: bool, asked: list[str]) -> None:  # type: ignore[no-untyped-def]
    def handle(dialog) -> None:  # type: ignore[no-untyped-def]
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", handle)


def test_cancel_order_asks_first(page, db: Session, app: Flask) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db, name="Cy Canceller")
    film = make_film(db, make_studio_user(db), title="Second Thoughts")
    order = buy(db, app, fan, film, 2)
    log_in(page, fan.email)
    page.goto(f"/orders/{order.reference}")
    button = page.get_by_role("button", name="Cancel order and refund $100.00")
    asked: list[str] = []
    answer_next_dialog(page, False, asked)
    button.click()
    # click() waits for any navigation it started: a form sent anyway would have landed by now.
    assert asked and f"Cancel order {order.reference}?" in asked[0] and "$100.00" in asked[0]
    db.reread()
    assert db.get(Order, order.id).status == OrderStatus.PAID
    answer_next_dialog(page, True, asked)
    button.click()
    expect(page.get_by_text("Order cancelled")).to_be_visible()
    db.reread()
    assert db.get(Order, order.id).status == OrderStatus.CANCELLED


def test_withdraw_draft_asks_first(page, db: Session) -> None:  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.DRAFT, title="Maybe Later")
    log_in(page, studio.email)
    page.goto(f"/studio/films/{film.id}")
    asked: list[str] = []
    answer_next_dialog(page, False, asked)
    page.get_by_role("button", name="Withdraw").click()
    assert asked and "Withdraw Maybe Later?" in asked[0]
    db.reread()
    assert db.get(Film, film.id).state == FilmState.DRAFT
    answer_next_dialog(page, True, asked)
    page.get_by_role("button", name="Withdraw").click()
    expect(page.get_by_text("The film was withdrawn.")).to_be_visible()
    db.reread()
    assert db.get(Film, film.id).state == FilmState.CANCELLED

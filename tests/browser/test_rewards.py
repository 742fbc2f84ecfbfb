"""A backer books a screening and a studio member checks the ticket in, in a real browser."""

from __future__ import annotations

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from crowdfund.rewards.models import Ticket
from tests.browser.conftest import assert_accessible
from tests.browser.test_purchase import log_in
from tests.conftest import CheckSession
from tests.factories import buy, make_studio_user, make_user
from tests.rewards_factories import add_screening, close_after_deadline, film_with_tiers

pytestmark = pytest.mark.browser


def test_backer_books_and_staff_check_the_ticket_in(page, db: CheckSession, app: Flask) -> None:  # type: ignore[no-untyped-def]
    studio = make_studio_user(db, "Browser Studio")
    film = film_with_tiers(db, studio, title="Door Test", funding_goal_cents=10_000)
    fan = make_user(db, "door@example.com", name="Dora Door")
    buy(db, app, fan, film, 2)
    close_after_deadline(db, app, film)
    add_screening(db, film, seats=30, cinema="Cine Rio")
    db.reread()
    code = db.scalars(select(Ticket.code).where(Ticket.user_id == fan.id)).one()

    log_in(page, fan.email)
    page.get_by_role("link", name="Tickets").click()
    page.get_by_role("heading", name="Your tickets").wait_for()
    expect(page.get_by_role("img", name="QR code of ticket").first).to_be_visible()
    page.get_by_role("link", name="Ticket 1").click()
    assert_accessible(page)
    page.get_by_label("Screening", exact=True).select_option(index=0)
    page.get_by_role("button", name="Book this screening").click()
    expect(page.get_by_text("Booked. Show this ticket's QR code at the door.")).to_be_visible()
    expect(page.get_by_text("Cine Rio, Lisbon").first).to_be_visible()
    page.get_by_role("button", name="Log out").click()

    log_in(page, studio.email)
    page.goto(f"/studio/films/{film.id}")
    page.get_by_role("link", name="Check-in at Cine Rio").click()
    page.get_by_role("heading", name="Check-in: Door Test").wait_for()
    assert_accessible(page)
    page.get_by_label("Ticket code").fill(code.lower())
    page.get_by_role("button", name="Check in").click()
    expect(page.locator("#check-in-result")).to_contain_text("Admitted")
    page.get_by_label("Ticket code").fill(code)
    page.get_by_role("button", name="Check in").click()
    expect(page.locator("#check-in-result")).to_contain_text("already used at")
    page.reload()
    expect(page.locator("#attendance")).to_contain_text("1 admitted of 1 booked")
    db.reread()
    assert db.scalars(select(Ticket.status).where(Ticket.code == code)).one() == "redeemed"

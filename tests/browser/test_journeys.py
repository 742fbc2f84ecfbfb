"""Main journeys in a real browser."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from crowdfund.films.states import FilmState
from tests.browser.conftest import assert_accessible
from tests.factories import PASSWORD, make_film, make_studio_user

pytestmark = pytest.mark.browser


def test_sign_up_log_in_and_see_a_film(page, db: Session, mail) -> None:  # type: ignore[no-untyped-def]
    from tests.http.test_auth import local, verification_link

    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="The Browser Film")
    page.goto("/")
    assert_accessible(page)
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("Your name").fill("Bea Browser")
    page.get_by_label("E-mail").fill("bea@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat password").fill(PASSWORD)
    assert_accessible(page)
    page.get_by_role("button", name="Sign up").click()
    page.get_by_text("Check your e-mail").wait_for()
    assert_accessible(page)
    page.goto(local(verification_link(mail, "bea@example.com")))
    page.get_by_text("Your e-mail address is confirmed").wait_for()
    page.get_by_label("E-mail").fill("BEA@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Your portfolio").wait_for()
    page.get_by_role("link", name="Open").first.click()
    page.get_by_role("link", name="The Browser Film").click()
    page.get_by_role("heading", name="The Browser Film").wait_for()
    assert "All or nothing" in page.content()
    assert page.url.endswith(f"/films/{film.slug}")
    assert_accessible(page)

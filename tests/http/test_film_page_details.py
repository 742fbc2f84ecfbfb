"""What the film page's buy panel tells a fan: true to the configuration and the clock."""

import re
from datetime import timedelta

import pytest
from flask import Flask

from crowdfund.films.states import FilmState
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_film, make_studio_user, make_user


@pytest.fixture
def fan(db: CheckSession, client: Client):  # type: ignore[no-untyped-def]
    user = make_user(db, "panel@example.com")
    client.login(user.email, PASSWORD)
    return user


def visible_text(page: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def test_buy_panel_states_the_configured_hold_time(
    client: Client, db: CheckSession, app: Flask, fan, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="Held Up")
    monkeypatch.setitem(app.config, "HOLD_MINUTES", 30)
    text = visible_text(client.get(f"/films/{film.slug}").get_data(as_text=True))
    assert "held for you for 30 minutes" in text and "15 minutes" not in text


def test_after_the_deadline_the_film_page_offers_no_purchase(
    client: Client, db: CheckSession, fan, clock
) -> None:  # type: ignore[no-untyped-def]
    """Until `close-rounds` decides the film it is still "funding", but every hold
    is refused: the page must not offer a form that cannot succeed."""
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="Too Late")
    clock.set(film.deadline + timedelta(minutes=3))
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    text = visible_text(page)
    assert "Continue to review" not in text and f'action="/films/{film.slug}/hold"' not in page
    assert "Funding ended" in text and "Funding ends" not in text
    assert "Funding has closed" in text


def test_before_the_deadline_the_film_page_offers_the_purchase(
    client: Client, db: CheckSession, fan, clock
) -> None:  # type: ignore[no-untyped-def]
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="In Time")
    clock.set(film.deadline - timedelta(minutes=3))
    text = visible_text(client.get(f"/films/{film.slug}").get_data(as_text=True))
    assert "Continue to review" in text and "Funding ends" in text and "Funding has closed" not in text

"""What the checkout says about cancelling: never a cancellation deadline in the past."""

import re
from datetime import timedelta

import pytest
from flask import Flask

from crowdfund.dev.localstripe_server import confirm_card_setup
from crowdfund.films.states import FilmState
from tests.conftest import CheckSession, Client
from tests.factories import GOOD_CARD, PASSWORD, make_film, make_studio_user, make_user

DATE_FORMAT = "%d %b %Y, %H:%M"


@pytest.fixture
def fan(db: CheckSession, client: Client):  # type: ignore[no-untyped-def]
    user = make_user(db, "late@example.com")
    client.login(user.email, PASSWORD)
    return user


def checkout_page(client: Client, film) -> str:  # type: ignore[no-untyped-def]
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    key = re.search(r'name="key" value="([^"]+)"', page).group(1)
    held = client.post_form(f"/films/{film.slug}/hold", {"units": "1", "key": key})
    assert held.status_code == 303 and "/checkout" in held.headers["Location"], held.headers.get("Location")
    response = client.get(held.headers["Location"])
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_checkout_for_a_film_closing_within_48_hours_says_it_cannot_be_cancelled(
    client: Client, db: CheckSession, fan, clock
) -> None:  # type: ignore[no-untyped-def]
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="Last Call")
    clock.set(film.deadline - timedelta(hours=30))
    page = checkout_page(client, film)
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "cannot be cancelled once paid" in text
    assert "48 hours before the funding deadline" in text
    # The cancellation deadline, 18 hours ago, is not offered as a date to cancel by.
    assert (film.deadline - timedelta(hours=48)).strftime(DATE_FORMAT) not in page
    assert "You may cancel until" not in text


def test_checkout_for_a_film_closing_in_ten_days_shows_the_cancellation_date(
    client: Client, db: CheckSession, fan, clock
) -> None:  # type: ignore[no-untyped-def]
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="Long Run")
    clock.set(film.deadline - timedelta(days=10))
    page = checkout_page(client, film)
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "You may cancel until" in text
    assert (film.deadline - timedelta(hours=48)).strftime(DATE_FORMAT) in page
    assert "cannot be cancelled" not in text


def test_checkout_when_cancellation_closes_before_the_hold_lapses(
    client: Client, db: CheckSession, fan, clock
) -> None:  # type: ignore[no-untyped-def]
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="Close Call")
    clock.set(film.deadline - timedelta(hours=48, minutes=5))  # the hold lasts 15 minutes
    page = checkout_page(client, film)
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    until = (film.deadline - timedelta(hours=48)).strftime(DATE_FORMAT)
    assert until in page
    assert "before your hold lapses" in text and "cannot be cancelled" in text


def test_receipt_for_a_purchase_paid_after_the_cancellation_deadline_says_it_cannot_be_cancelled(
    client: Client, db: CheckSession, app: Flask, fan, clock, mail
) -> None:  # type: ignore[no-untyped-def]
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="Late Show")
    clock.set(film.deadline - timedelta(hours=30))
    page = checkout_page(client, film)
    secret = re.search(r'data-client-secret="([^"]+)"', page).group(1)
    reference = re.search(r'action="/orders/([^/"]+)/pay"', page).group(1)
    setup = confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, GOOD_CARD
    )
    paid = client.post_form(f"/orders/{reference}/pay", {"setup_intent": setup["id"]})
    assert paid.status_code == 303
    body = mail.to(fan.email)[-1].get_content()
    assert "You can cancel this order until" not in body
    assert "cannot be cancelled" in body
    assert (film.deadline - timedelta(hours=48)).strftime("%d %b %Y, %H:%M UTC") not in body


def test_receipt_for_a_purchase_paid_in_time_gives_the_cancellation_date(
    client: Client, db: CheckSession, app: Flask, fan, clock, mail
) -> None:  # type: ignore[no-untyped-def]
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="Early Show")
    clock.set(film.deadline - timedelta(days=10))
    page = checkout_page(client, film)
    secret = re.search(r'data-client-secret="([^"]+)"', page).group(1)
    reference = re.search(r'action="/orders/([^/"]+)/pay"', page).group(1)
    setup = confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, GOOD_CARD
    )
    client.post_form(f"/orders/{reference}/pay", {"setup_intent": setup["id"]})
    body = mail.to(fan.email)[-1].get_content()
    assert "You can cancel this order until" in body and "cannot be cancelled" not in body

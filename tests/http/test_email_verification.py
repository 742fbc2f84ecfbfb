"""Holding stakes needs a confirmed e-mail address: a link is e-mailed at
sign-up (and again on request), and `next` survives sign-up and confirmation
so a fan who came from a film lands back on it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import func, select

from crowdfund.accounts.models import User
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order
from tests.conftest import CheckSession, Client, MailCapture
from tests.factories import PASSWORD, make_film, make_studio_user, make_user
from tests.http.test_auth import local, verification_link


def hold(client: Client, slug: str, key: str = "verify-key-0000000001"):  # type: ignore[no-untyped-def]
    return client.post_form(f"/films/{slug}/hold", {"units": "2", "key": key})


def test_an_unverified_fan_cannot_hold_and_can_ask_for_the_link_again(
    client: Client, db: CheckSession, mail: MailCapture
) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    make_user(db, "new@example.com", verified=False, name="Nell")
    client.login("new@example.com", PASSWORD)
    refused = hold(client, film.slug)
    assert refused.status_code == 403
    page = refused.get_data(as_text=True)
    assert (
        "Confirm your e-mail address first" in page
        and "new@example.com" in page
        and "Nothing was held" in page
    )
    db.reread()
    assert db.scalar(select(func.count()).select_from(Order)) == 0
    # "Send the link again" from the refusal: the form on the page, with next = the film.
    action = re.search(r'action="(/account/verify-email[^"]*)"', page).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    sent = client.post_form(action)
    assert sent.status_code == 303 and sent.headers["Location"] == f"/films/{film.slug}", (
        action,
        sent.headers,
    )
    link = verification_link(mail, "new@example.com")
    assert "Hello Nell" in mail.to("new@example.com")[-1].get_content()
    confirmed = client.get(local(link))
    # Logged in already: straight back to the film.
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == f"/films/{film.slug}"
    held = hold(client, film.slug, "verify-key-0000000002")
    assert held.status_code == 303 and "/checkout" in held.headers["Location"]


def test_the_account_page_offers_the_link_until_the_address_is_confirmed(
    client: Client, db: CheckSession, mail: MailCapture
) -> None:
    make_user(db, "later@example.com", verified=False)
    client.login("later@example.com", PASSWORD)
    page = client.get("/account").get_data(as_text=True)
    assert "is not confirmed yet" in page and "Send the confirmation link again" in page
    assert client.post_form("/account/verify-email").headers["Location"] == "/account"
    client.get(local(verification_link(mail, "later@example.com")))
    page = client.get("/account").get_data(as_text=True)
    assert "is confirmed" in page and "Send the confirmation link again" not in page


def test_a_confirmation_link_expires_and_cannot_be_forged(
    client: Client, db: CheckSession, mail: MailCapture, clock, app: Flask
) -> None:  # type: ignore[no-untyped-def]
    user = make_user(db, "slow@example.com", verified=False)
    start = datetime.now(UTC)
    clock.set(start)
    client.login("slow@example.com", PASSWORD)
    client.post_form("/account/verify-email")
    link = local(verification_link(mail, "slow@example.com"))
    clock.set(start + timedelta(seconds=app.config["EMAIL_VERIFY_MAX_AGE_SECONDS"] + 5))
    expired = client.get(link)
    assert expired.status_code == 400 and "has expired" in expired.get_data(as_text=True)
    assert "Send a new confirmation link" in expired.get_data(as_text=True)
    token = urlsplit(link).path.rsplit("/", 1)[1]
    forged = client.get(f"/verify-email/{token[:-3]}abc")
    assert forged.status_code == 400 and "invalid" in forged.get_data(as_text=True)
    db.reread()
    assert db.get(User, user.id).email_verified_at is None


def test_next_is_kept_through_sign_up_and_confirmation(
    client: Client, db: CheckSession, mail: MailCapture
) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    film_path = f"/films/{film.slug}"
    film_page = client.get(film_path).get_data(as_text=True)
    login_url = re.search(r'href="([^"]+)">Log in to back this film', film_page).group(1)  # type: ignore[union-attr]
    login_page = client.get(login_url.replace("&amp;", "&")).get_data(as_text=True)
    signup_url = re.search(r'href="([^"]+)">Create an account', login_page).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    assert "next=" in signup_url
    signed_up = client.post_form(
        signup_url,
        {"display_name": "Fay", "email": "fay@example.com", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert signed_up.status_code == 303
    assert local(signed_up.headers["Location"]) == local(login_url.replace("&amp;", "&"))
    confirmed = client.get(local(verification_link(mail, "fay@example.com")))
    assert confirmed.status_code == 303
    back_to_login = confirmed.headers["Location"]
    token = client.csrf_token()
    logged_in = client.post(
        back_to_login, data={"email": "fay@example.com", "password": PASSWORD, "csrf_token": token}
    )
    assert logged_in.status_code == 302 and logged_in.headers["Location"] == film_path
    assert hold(client, film.slug).status_code == 303


def test_sign_up_and_confirmation_follow_only_same_site_next(
    client: Client, db: CheckSession, mail: MailCapture
) -> None:
    for n, evil in enumerate(["//evil.example", "/\t/evil.example", "https:evil.example", "/\\evil"]):
        response = client.post_form(
            "/signup",
            {"display_name": "E", "email": f"e{n}@example.com", "password": PASSWORD, "confirm": PASSWORD},
            query_string={"next": evil},
        )
        assert response.status_code == 303 and response.headers["Location"] == "/login", evil
        link = local(verification_link(mail, f"e{n}@example.com"))
        confirmed = client.get(link, query_string={"next": evil})
        assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/login", evil

"""How many SQL statements the hot and the money paths send: a change that
adds a query to them shows here (the numbers are what the code does today;
no timings). Transaction control is not counted (see conftest.Statements)."""

from __future__ import annotations

import re

from flask import Flask

from crowdfund.dev.localstripe_server import confirm_card_setup
from tests.conftest import POSTGRES, CheckSession, Client, Statements
from tests.factories import GOOD_CARD, PASSWORD, make_user

DATABASE = "postgresql" if POSTGRES else "sqlite"

#: A hold POST (the flash-sale path), per database: the first hold of a film
#: reads its terms; later ones take them from the cache.
HOLD_STATEMENTS = {
    "fresh": {"sqlite": 6, "postgresql": 3},
    "cached": {"sqlite": 5, "postgresql": 2},
}
#: A paid order cancelled by its backer: the cancellation, its e-mail (look
#: up the key, insert the row) and its refund's outbox row (a worker refunds
#: at Stripe after commit).
CANCEL_STATEMENTS = {"sqlite": 15, "postgresql": 14}


def key_on_film_page(client: Client, film) -> str:  # type: ignore[no-untyped-def]
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    return re.search(r'name="key" value="([^"]+)"', page).group(1)


def counted_hold(client: Client, statements: Statements, film) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    """POST a hold of 2 and count its statements; the form key and the CSRF token are fetched first."""
    data = {"units": "2", "key": key_on_film_page(client, film), "csrf_token": client.csrf_token()}
    with statements.counting() as seen:
        response = client.post(f"/films/{film.slug}/hold", data=data)
    assert response.status_code == 303 and "/checkout" in response.headers["Location"]
    return response.headers["Location"], list(seen)


def test_a_hold_post(
    app: Flask,
    client: Client,
    other_client: Client,
    db: CheckSession,
    film,  # type: ignore[no-untyped-def]
    statements: Statements,
) -> None:
    client.login(make_user(db).email, PASSWORD)
    _, fresh = counted_hold(client, statements, film)
    other_client.login(make_user(db).email, PASSWORD)
    _, cached = counted_hold(other_client, statements, film)
    assert (len(fresh), len(cached)) == (
        HOLD_STATEMENTS["fresh"][DATABASE],
        HOLD_STATEMENTS["cached"][DATABASE],
    ), "\n".join(["fresh:", *fresh, "cached:", *cached])


def test_a_cancel_and_its_refund(
    app: Flask,
    client: Client,
    db: CheckSession,
    film,  # type: ignore[no-untyped-def]
    statements: Statements,
) -> None:
    client.login(make_user(db).email, PASSWORD)
    checkout, _ = counted_hold(client, statements, film)
    page = client.get(checkout).get_data(as_text=True)
    secret = re.search(r'data-client-secret="([^"]+)"', page).group(1)
    setup = confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, GOOD_CARD
    )
    paid = client.post_form(checkout.replace("/checkout", "/pay"), {"setup_intent": setup["id"]})
    order_url = paid.headers["Location"]
    token = client.csrf_token()
    with statements.counting() as seen:
        cancelled = client.post(order_url + "/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 303
    assert "Refund requested" in client.get(order_url).get_data(as_text=True)
    assert len(seen) == CANCEL_STATEMENTS[DATABASE], "\n".join(seen)

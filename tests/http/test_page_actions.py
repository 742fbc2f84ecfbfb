"""The buttons and forms the pages show, state by state, now that the domain's
rules decide them (issue 13, point 4): each appears exactly where it did when
the templates compared state strings, and each is a move the server accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from crowdfund.accounts.models import Role
from crowdfund.films import services as films
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from tests.conftest import CheckSession, Client, Clock
from tests.factories import PASSWORD, hold, make_film, make_studio_user, make_user

F = FilmState


def _film_in(db: CheckSession, studio: object, state: FilmState) -> Film:
    """A film in `state`, through the real moves."""
    base = {F.CLOSED: F.RELEASED, F.CANCELLED: F.DRAFT}.get(state, state)
    film = make_film(db, studio, base)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    if state == F.CLOSED:
        films.close_film(db, film, studio, now=now)  # type: ignore[arg-type]
    elif state == F.CANCELLED:
        films.withdraw(db, film, studio, now=now)  # type: ignore[arg-type]
    db.commit()
    assert film.state == state
    return film


#: What the studio's film page offered in each state (the old template's conditions).
STUDIO_PAGE = {
    F.DRAFT: {"edit", "submit", "withdraw"},
    F.IN_REVIEW: {"withdraw"},
    F.FUNDING: {"public"},
    F.FUNDED: {"release", "reports", "public"},
    F.FAILED: {"public"},
    F.RELEASED: {"close", "reports", "public"},
    F.CLOSED: {"reports", "public"},
    F.CANCELLED: set(),
}


@pytest.mark.parametrize("state", list(FilmState))
def test_the_studio_film_page_offers_the_moves_of_its_state(
    client: Client, db: CheckSession, state: FilmState
) -> None:
    studio = make_studio_user(db)
    film = _film_in(db, studio, state)
    client.login(studio.email, PASSWORD)
    page = client.get(f"/studio/films/{film.id}").get_data(as_text=True)
    markers = {
        "edit": f'href="/studio/films/{film.id}/edit"',
        "submit": f'action="/studio/films/{film.id}/submit"',
        "withdraw": f'action="/studio/films/{film.id}/withdraw"',
        "release": f'action="/studio/films/{film.id}/release"',
        "close": f'action="/studio/films/{film.id}/close"',
        "reports": "Box-office reports</a>",
        "public": "Public page</a>",
    }
    shown = {name for name, marker in markers.items() if marker in page}
    assert shown == STUDIO_PAGE[state]
    assert ("Preview</a>" in page) is ("public" not in shown)
    assert ("<h2>Funding</h2>" in page) is ("public" in shown)
    assert (f'action="/studio/films/{film.id}/tiers"' in page) is (state == F.DRAFT)


@pytest.mark.parametrize("move", ["submit", "withdraw", "release", "close"])
def test_a_move_the_page_does_not_offer_is_refused(client: Client, db: CheckSession, move: str) -> None:
    studio = make_studio_user(db)
    film = _film_in(db, studio, F.FUNDING)  # offers none of them
    client.login(studio.email, PASSWORD)
    response = client.post_form(f"/studio/films/{film.id}/{move}")
    assert response.status_code == 303
    db.reread()
    assert db.get(Film, film.id).state == F.FUNDING  # type: ignore[union-attr]


REVIEW_PAGE = {
    F.DRAFT: {"cancel"},
    F.IN_REVIEW: {"approve", "send_back", "cancel"},
    F.FUNDING: {"cancel"},
    F.FUNDED: set(),
    F.CANCELLED: set(),
}


@pytest.mark.parametrize("state", list(REVIEW_PAGE))
def test_the_review_page_offers_the_decisions_of_its_state(
    client: Client, db: CheckSession, state: FilmState
) -> None:
    studio = make_studio_user(db)
    film = _film_in(db, studio, state)
    admin = make_user(db, roles=(Role.ADMIN,))
    client.login(admin.email, PASSWORD)
    page = client.get(f"/admin/reviews/{film.id}").get_data(as_text=True)
    markers = {
        name: f'action="/admin/reviews/{film.id}/{path}"'
        for name, path in (("approve", "approve"), ("send_back", "send-back"), ("cancel", "cancel"))
    }
    assert {name for name, marker in markers.items() if marker in page} == REVIEW_PAGE[state]
    assert "another admin must approve this film" not in page


def test_the_order_page_offers_payment_while_held_and_buying_again_once_lapsed(
    app: Flask, client: Client, db: CheckSession, clock: Clock
) -> None:
    studio = make_studio_user(db)
    film = make_film(db, studio, F.FUNDING)
    fan = make_user(db)
    order = hold(db, fan, film, 2)
    client.login(fan.email, PASSWORD)
    page = client.get(f"/orders/{order.reference}").get_data(as_text=True)
    assert (
        f'href="/orders/{order.reference}/checkout"' in page
        and f'action="/orders/{order.reference}/release"' in page
    )
    assert "Choose your stakes again" not in page and "Awaiting payment" in page
    clock.set(order.expires_at + timedelta(seconds=1))
    page = client.get(f"/orders/{order.reference}").get_data(as_text=True)
    assert f'href="/orders/{order.reference}/checkout"' not in page
    assert f'action="/orders/{order.reference}/release"' not in page
    assert "Choose your stakes again" in page and 'class="badge status-expired">Hold expired<' in page
    portfolio = client.get("/portfolio").get_data(as_text=True)
    assert "Hold expired" in portfolio and "Continue to payment" not in portfolio

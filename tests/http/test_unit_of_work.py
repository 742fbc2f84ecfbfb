"""One unit of work per request (issue 13, point 1): every view runs in the
wrapper of crowdfund/site/unit_of_work.py, which commits the request's session
once when the view returns and rolls it back when it raises; nothing a failed
request flushed is ever committed, and no view commits by itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from flask import Flask
from sqlalchemy import event, func, select, update

from crowdfund.accounts.models import RememberToken, User
from crowdfund.films.states import FilmState
from crowdfund.funding import holds
from crowdfund.funding.hold_statement import DuplicateRequest
from crowdfund.funding.models import BackerPosition, FilmInventory, Order
from crowdfund.rewards import screenings
from crowdfund.rewards.models import CheckInAttempt
from crowdfund.site.unit_of_work import MARK, unit_of_work
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, hold, make_film, make_studio_user, make_user
from tests.rewards_factories import add_screening

# These count the real COMMITs a request sends, so they commit for real (not inside a test's savepoint).
pytestmark = pytest.mark.committing


@dataclass
class Statements:
    commits: int = 0
    sql: list[str] = field(default_factory=list)


@contextmanager
def watching(app: Flask) -> Iterator[Statements]:
    """What the app sends to the database meanwhile: each COMMIT, and the SQL."""
    engine = app_services(app).engine
    seen = Statements()

    def on_commit(_conn) -> None:  # type: ignore[no-untyped-def]
        seen.commits += 1

    def on_execute(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:  # type: ignore[no-untyped-def]
        seen.sql.append(statement)

    event.listen(engine, "commit", on_commit)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "before_cursor_execute", on_execute)


def form_key(client: Client, slug: str) -> str:
    page = client.get(f"/films/{slug}").get_data(as_text=True)
    return re.search(r'name="key" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def test_every_endpoint_runs_in_the_unit_of_work(app: Flask) -> None:
    """Outermost around every view (the rate limiter's wrappers included), so a
    view added later cannot escape it."""
    wrapper_code = unit_of_work(lambda: None).__code__
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert {"funding.hold", "payments.webhook", "mail_admin.retry", "accounts.login", "static"} <= endpoints
    for endpoint in endpoints:
        view = app.view_functions[endpoint]
        assert getattr(view, MARK, False) and view.__code__ is wrapper_code, endpoint
    # The limiter still wraps the views marked @rate_limit, inside the unit of work.
    assert app.view_functions["funding.hold"].__wrapped__.__code__ is not wrapper_code  # type: ignore[attr-defined]


def test_a_refused_hold_that_flushed_its_order_leaves_nothing(
    client: Client, db: CheckSession, app: Flask
) -> None:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=20,
        per_backer_limit=5,
        funding_goal_cents=50_000,
    )
    for units in (5, 5, 5, 3):
        hold(db, make_user(db), film, units)
    fan = make_user(db, "late@example.com")
    client.login(fan.email, PASSWORD)
    key = form_key(client, film.slug)
    with watching(app) as seen:
        response = client.post_form(f"/films/{film.slug}/hold", {"units": "3", "key": key})
    assert response.status_code == 303 and response.headers["Location"] == f"/films/{film.slug}#buy"
    # The hold wrote its order before the stock refused it (a SoldOut after the flush)...
    assert any(s.lstrip().upper().startswith("INSERT INTO ORDERS") for s in seen.sql)
    # ...and the request committed nothing of it (the CSRF page's read aside: one COMMIT, before the POST).
    db.reread()
    assert db.scalar(select(func.count()).select_from(Order).where(Order.user_id == fan.id)) == 0
    assert db.scalar(select(BackerPosition.units).where(BackerPosition.user_id == fan.id)) in (None, 0)
    inventory = db.get(FilmInventory, film.id)
    assert (inventory.sold, inventory.held) == (0, 18)
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    assert "Sold out" in page


def test_a_successful_post_commits_exactly_once(client: Client, db: CheckSession, app: Flask) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    fan = make_user(db)
    client.login(fan.email, PASSWORD)
    key = form_key(client, film.slug)
    token = client.csrf_token()
    with watching(app) as seen:
        response = client.post(
            f"/films/{film.slug}/hold", data={"units": "2", "key": key, "csrf_token": token}
        )
    assert response.status_code == 303 and "/checkout" in response.headers["Location"]
    assert seen.commits == 1
    db.reread()
    assert db.scalar(select(Order.units).where(Order.user_id == fan.id)) == 2


def test_a_remembered_browser_commits_its_login_with_the_request_once(
    client: Client, db: CheckSession, app: Flask
) -> None:
    """The remember-me login (the token rotated) is part of the request's unit
    of work: one COMMIT for it and the hold together."""
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    fan = make_user(db)
    client.post_form("/login", {"email": fan.email, "password": PASSWORD, "remember": "y"})
    key = form_key(client, film.slug)
    token = client.csrf_token()
    with client.session_transaction() as cookie_session:
        cookie_session.pop("_user_id")  # the browser session ended: the remember cookie logs in again
    with watching(app) as seen:
        response = client.post(
            f"/films/{film.slug}/hold", data={"units": "1", "key": key, "csrf_token": token}
        )
    assert response.status_code == 303 and "/checkout" in response.headers["Location"]
    assert seen.commits == 1
    db.reread()
    assert (
        db.scalar(
            select(func.count()).select_from(RememberToken).where(RememberToken.rotated_at.is_not(None))
        )
        == 1
    )


def test_a_failed_request_keeps_the_remember_token_as_it_was(
    client: Client, db: CheckSession, app: Flask
) -> None:
    """A remembered browser whose request fails (here a 404): the rotation is
    rolled back with the rest, and the browser keeps its old token, still good."""
    fan = make_user(db)
    client.post_form("/login", {"email": fan.email, "password": PASSWORD, "remember": "y"})
    first = client.get_cookie("remember").value  # type: ignore[union-attr]
    client.delete_cookie("session")
    with watching(app) as seen:
        missing = client.get("/films/no-such-film")
    assert missing.status_code == 404 and seen.commits == 0
    assert client.get_cookie("remember").value == first  # type: ignore[union-attr]
    db.reread()
    assert db.scalars(select(RememberToken.rotated_at)).all() == [None]
    client.delete_cookie("session")
    assert client.get("/account").status_code == 200  # the old token logs in, and is replaced now
    assert client.get_cookie("remember").value != first  # type: ignore[union-attr]


def test_an_unexpected_error_after_the_service_writes_nothing(
    client: Client, db: CheckSession, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check-in logs the attempt; the page that follows fails: the 500 page, and no attempt stays."""
    studio = make_studio_user(db)
    screening = add_screening(db, make_film(db, studio, FilmState.FUNDED))
    client.login(studio.email, PASSWORD)
    token = client.csrf_token()

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug while the page is rendered")

    monkeypatch.setattr(screenings, "screening_attendance", broken)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    with watching(app) as seen:
        response = client.post(
            f"/studio/screenings/{screening.id}/check-in",
            data={"code": "AAAAA-BBBBB-CCCCC-DDDDD", "csrf_token": token},
        )
    assert response.status_code == 500 and "Something went wrong" in response.get_data(as_text=True)
    assert any(s.lstrip().upper().startswith("INSERT INTO CHECK_IN_ATTEMPTS") for s in seen.sql)
    assert seen.commits == 0
    db.reread()
    assert db.scalar(select(func.count()).select_from(CheckInAttempt)) == 0


def test_a_get_that_only_reads_commits_at_most_once(client: Client, db: CheckSession, app: Flask) -> None:
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.FUNDING)
    client.login(studio.email, PASSWORD)
    for url in (f"/films/{film.slug}", f"/studio/films/{film.id}", f"/studio/films/{film.id}/backers.csv"):
        with watching(app) as seen:
            response = client.get(url)
            assert response.status_code == 200
            response.get_data()  # a streamed body is read to its end
        assert seen.commits <= 1, url
        assert not [s for s in seen.sql if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))], url


def test_one_shot_cli_commands_commit_once(app: Flask, db: CheckSession) -> None:
    runner = app.test_cli_runner()
    with watching(app) as seen:
        result = runner.invoke(
            args=[
                "users",
                "create",
                "new-admin@example.com",
                "--role",
                "admin",
                "--password",
                "a long enough password",
            ]
        )
    assert result.exit_code == 0, result.output
    assert seen.commits == 1
    refused = runner.invoke(
        args=["users", "create", "new-admin@example.com", "--password", "another password"]
    )
    assert refused.exit_code != 0
    db.reread()
    assert db.scalar(select(func.count()).select_from(User).where(User.email == "new-admin@example.com")) == 1


@pytest.mark.parametrize("other_units, expected", [(2, "checkout"), (4, "busy")])
def test_a_duplicate_hold_is_answered_after_the_rollback(
    client: Client,
    db: CheckSession,
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    other_units: int,
    expected: str,
) -> None:
    """The same form sent twice at once: the request that lost the race wrote
    something, then learnt of the other (DuplicateRequest). Its writes are
    rolled back, then it reads the other request's order by the form's key:
    that order's checkout if it is for the same quantity, else "already being
    processed"."""
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    fan = make_user(db)
    client.login(fan.email, PASSWORD)
    key = form_key(client, film.slug)
    other = hold(db, fan, film, other_units, key=key)  # the other request, committed first

    def loses_the_race(session, *_args: object, **_kwargs: object) -> None:  # type: ignore[no-untyped-def]
        session.execute(
            update(FilmInventory).where(FilmInventory.film_id == film.id).values(held=FilmInventory.held + 7)
        )
        raise DuplicateRequest()

    monkeypatch.setattr(holds, "hold_stakes", loses_the_race)
    response = client.post_form(f"/films/{film.slug}/hold", {"units": "2", "key": key})
    assert response.status_code == 303
    if expected == "checkout":
        assert response.headers["Location"] == f"/orders/{other.reference}/checkout"
    else:
        assert response.headers["Location"] == f"/films/{film.slug}#buy"
        page = client.get(response.headers["Location"]).get_data(as_text=True)
        assert "This request is already being processed" in page
    db.reread()
    assert db.get(FilmInventory, film.id).held == other_units

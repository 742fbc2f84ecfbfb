"""Nothing a logged-in person sees is kept by a browser or proxy cache: every
response to an authenticated user, and every private file (ticket and
statement PDFs, exports, draft posters), says `Cache-Control: no-store`.
Public catalogue pages for anonymous visitors stay cacheable."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import select

from crowdfund.accounts.models import Role
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.payouts import box_office
from crowdfund.payouts.models import PayoutStatement
from crowdfund.workflows import payout_run
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_film, make_user
from tests.http.test_payouts_http import released  # noqa: F401
from tests.rewards_factories import give_ticket


def no_store(response) -> bool:  # type: ignore[no-untyped-def]
    return "no-store" in response.headers.get("Cache-Control", "")


def test_every_page_and_private_file_of_a_logged_in_user_is_no_store(
    app: Flask,
    client: Client,  # type: ignore[no-untyped-def]
    other_client: Client,
    db: CheckSession,
    released,
) -> None:
    film, studio, finance = released["film"], released["studio"], released["finance"]
    fan = released["backers"][0]
    today = released["now"].date()
    report = box_office.file_report(
        db,
        film,
        studio,
        box_office.ReportInput(today, today, 40_000, ""),
        now=released["now"] + timedelta(days=30),
    )
    db.commit()
    box_office.approve_report(db, report, finance, now=released["now"])
    db.commit()
    run = payout_run.run_payout(db, report, finance, now=released["now"])
    statement = db.scalar(select(PayoutStatement).where(PayoutStatement.user_id == fan.id))
    ticket = give_ticket(db, film, fan)
    draft = make_film(db, studio, FilmState.DRAFT)
    draft_poster = db.get(Film, draft.id).poster_id
    public_poster = db.get(Film, film.id).poster_id

    # Anonymous: the public catalogue and a public poster may be cached.
    for url in ("/", "/films?section=released", f"/films/{film.slug}", f"/files/{public_poster}"):
        response = client.get(url)
        assert response.status_code == 200 and not no_store(response), url
    assert "max-age" in client.get(f"/files/{public_poster}").headers["Cache-Control"]

    client.login(fan.email, PASSWORD)
    for url in (
        "/",
        f"/films/{film.slug}",
        "/portfolio",
        "/statements",
        f"/statements/{statement.id}",
        f"/statements/{statement.id}.pdf",
        "/tickets",
        f"/tickets/{ticket.id}",
        f"/tickets/{ticket.id}/ticket.pdf",
        f"/tickets/{ticket.id}/qr.svg",
        "/account",
        f"/files/{public_poster}",
        "/no/such/page",
    ):
        response = client.get(url)
        assert no_store(response), (url, response.status_code, response.headers.get("Cache-Control"))

    other_client.login(studio.email, PASSWORD)
    for url in (
        f"/files/{draft_poster}",
        f"/studio/films/{film.id}/backers.csv",
        "/studio/",
        f"/box-office/{report.id}/file" if report.file_id else "/studio/",
    ):
        response = other_client.get(url)
        assert response.status_code == 200 and no_store(response), (
            url,
            response.headers.get("Cache-Control"),
        )

    other_client.post_form("/logout")
    other_client.login(finance.email, PASSWORD)
    for url in (
        f"/finance/runs/{run.id}/statements.csv",
        f"/finance/runs/{run.id}/statements.xlsx",
        f"/finance/ledger?start={today}&end={today}",
        "/finance/reports",
    ):
        response = other_client.get(url)
        assert response.status_code == 200 and no_store(response), (
            url,
            response.headers.get("Cache-Control"),
        )


def test_every_get_route_walked_as_each_role_is_no_store(
    app: Flask, client: Client, db: CheckSession
) -> None:
    """The whole URL map, whatever each answers (200, 403, 404): never cacheable once logged in."""
    user = make_user(db, roles=(Role.FAN, Role.FINANCE, Role.ADMIN))
    client.login(user.email, PASSWORD)
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static":
            continue
        url = rule.rule
        for argument in rule.arguments:
            url = url.replace(f"<int:{argument}>", "1").replace(f"<{argument}>", "x")
        response = client.get(url)
        assert no_store(response), (url, response.status_code, response.headers.get("Cache-Control"))
        response.close()

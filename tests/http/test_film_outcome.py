"""A failed or cancelled film tells its backers what really happened: the
refund e-mail gives the real reason, and backers and the studio can still open
the film's page, with a banner saying where the money is. Strangers get 404
for a cancelled film, as before."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import Flask

from crowdfund.accounts.models import Role
from crowdfund.films.states import FilmState
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, buy, make_film, make_studio_user, make_user

HOLD = timedelta(minutes=15)


def _text(response) -> str:  # type: ignore[no-untyped-def]
    """The page as a reader sees it: no tags, single spaces."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split()).replace(" :", ":")


def _close_rounds(app: Flask, clock, when) -> None:  # type: ignore[no-untyped-def]
    clock.set(when)
    result = app.test_cli_runner().invoke(args=["funding", "close-rounds"])
    assert result.exit_code == 0, result.output


def _cancelled_film_with_a_backer(client: Client, db: CheckSession, app: Flask):  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    film = make_film(
        db,
        studio,
        FilmState.FUNDING,
        title="Harbour Lights",
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=40_000,
    )
    backer = make_user(db, "backer@example.com", name="Bea")
    buy(db, app, backer, film, 2)
    admin = make_user(db, roles=(Role.ADMIN,))
    client.login(admin.email, PASSWORD)
    response = client.post_form(
        f"/admin/reviews/{film.id}/cancel",
        {
            "cancel-reason": "The rights to the novel were withdrawn.",
            "cancel-csrf_token": client.csrf_token(),
        },
    )
    assert response.status_code == 303
    client.post_form("/logout")
    db.reread()
    return studio, film, backer


def test_backer_opens_a_cancelled_film_from_the_portfolio_and_sees_the_banner(
    client: Client, db: CheckSession, app: Flask, clock
) -> None:  # type: ignore[no-untyped-def]
    _, film, backer = _cancelled_film_with_a_backer(client, db, app)
    client.login(backer.email, PASSWORD)
    portfolio = client.get("/portfolio").get_data(as_text=True)
    assert f'href="/films/{film.slug}"' in portfolio
    page = client.get(f"/films/{film.slug}")
    assert page.status_code == 200
    text, html = _text(page), page.get_data(as_text=True)
    assert "This film was cancelled" in text and "The rights to the novel were withdrawn." in text
    assert "Your refund of $100.00 is on its way" in text
    assert "buy-panel" not in html and "/hold" not in html  # no buy panel
    poster = re.search(r'src="(/files/\d+)"', html)
    assert poster and client.get(poster.group(1)).status_code == 200
    _close_rounds(app, clock, film.deadline - timedelta(days=1))
    done = _text(client.get(f"/films/{film.slug}"))
    assert "Your refund of $100.00 has been made" in done


def test_studio_sees_the_refund_progress_of_its_cancelled_film(
    client: Client, db: CheckSession, app: Flask, clock
) -> None:  # type: ignore[no-untyped-def]
    studio, film, _ = _cancelled_film_with_a_backer(client, db, app)
    client.login(studio.email, PASSWORD)
    page = client.get(f"/films/{film.slug}")
    assert page.status_code == 200
    assert "Refunds are on their way to backers: 0 of 1 order refunded so far" in _text(page)
    _close_rounds(app, clock, film.deadline - timedelta(days=1))
    assert "Every backer has been refunded: 1 order, $100.00." in _text(client.get(f"/films/{film.slug}"))


def test_a_stranger_still_gets_404_for_a_cancelled_film(client: Client, db: CheckSession, app: Flask) -> None:
    _, film, _ = _cancelled_film_with_a_backer(client, db, app)
    assert client.get(f"/films/{film.slug}").status_code == 404
    assert client.get(f"/files/{film.poster_id}").status_code == 404
    client.login(make_user(db).email, PASSWORD)
    assert client.get(f"/films/{film.slug}").status_code == 404
    assert client.get(f"/files/{film.poster_id}").status_code == 404
    client.post_form("/logout")
    client.login(make_studio_user(db, "Another Studio").email, PASSWORD)
    assert client.get(f"/films/{film.slug}").status_code == 404


def test_backer_of_a_failed_film_sees_why_and_the_refund(
    client: Client, db: CheckSession, app: Flask, clock
) -> None:  # type: ignore[no-untyped-def]
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=40_000,
    )
    backer = make_user(db)
    buy(db, app, backer, film, 1)
    _close_rounds(app, clock, film.deadline + HOLD + timedelta(seconds=1))
    client.login(backer.email, PASSWORD)
    page = client.get(f"/films/{film.slug}")
    assert "This film did not reach its goal" in _text(
        page
    ) and "Your refund of $50.00 has been made" in _text(page)
    assert "buy-panel" not in page.get_data(as_text=True)


def test_refund_email_gives_the_real_reason(
    client: Client, db: CheckSession, app: Flask, clock, mail
) -> None:  # type: ignore[no-untyped-def]
    _, cancelled, backer = _cancelled_film_with_a_backer(client, db, app)
    failed = make_film(
        db,
        make_studio_user(db, "Studio Two"),
        FilmState.FUNDING,
        title="Quiet Tides",
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=40_000,
    )
    buy(db, app, backer, failed, 1)
    _close_rounds(app, clock, failed.deadline + HOLD + timedelta(seconds=1))
    by_subject = {m["Subject"]: m.get_content() for m in mail.to(backer.email)}
    cancel_mail = by_subject["Harbour Lights was cancelled: you are refunded in full"]
    assert "was cancelled by Reelshare" in cancel_mail
    assert "The reason given: The rights to the novel were withdrawn." in cancel_mail
    assert "did not reach" not in cancel_mail
    failed_mail = by_subject["Quiet Tides did not reach its goal: you are refunded in full"]
    assert "did not reach its funding goal of $400.00" in failed_mail and "cancelled" not in failed_mail

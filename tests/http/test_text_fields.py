"""Single-line fields refuse line breaks and control characters at every way
in (form, service, CLI), with the message beside the field; text is stored
NFC-normalised."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund.accounts.models import Role, Studio, User
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.rewards.models import RewardTier, Screening
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, film_input, make_film, make_studio_user, make_user, png_bytes
from tests.http.test_films import _form

BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("bad", BREAKS + ["\t", "\x1b", "\u202e"])  # NUL: a 400 for any form
def test_film_title_with_a_line_break_or_control_is_refused_and_nothing_written(
    client: Client, db: CheckSession, bad: str
) -> None:
    client.login(make_studio_user(db).email, PASSWORD)
    data = _form(
        title=f"Harbour{bad}Lights",
        logline="A ferry captain's last crossing.",
        poster=(io.BytesIO(png_bytes()), "poster.png"),
    )
    response = client.post_form("/studio/films/new", data, content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "The title must be on one line" in page or "The title cannot contain control" in page
    assert "A ferry captain&#39;s last crossing." in page  # the form comes back filled in
    assert db.scalar(select(func.count()).select_from(Film)) == 0


def test_edit_refuses_a_title_with_a_line_break(client: Client, db: CheckSession) -> None:
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.DRAFT, title="Calm Title")
    client.login(studio.email, PASSWORD)
    response = client.post_form(
        f"/studio/films/{film.id}/edit",
        _form(title="Calm\r\nBcc: everyone@example.com"),
        content_type="multipart/form-data",
    )
    assert response.status_code == 400 and "The title must be on one line" in response.get_data(as_text=True)
    db.reread()
    assert db.get(Film, film.id).title == "Calm Title"


def test_decomposed_title_is_stored_composed(client: Client, db: CheckSession) -> None:
    client.login(make_studio_user(db).email, PASSWORD)
    data = _form(
        title="Caf" + "e\u0301 Noir",
        synopsis="Line one.\r\nLine two.\rLine three.",
        poster=(io.BytesIO(png_bytes()), "poster.png"),
    )
    response = client.post_form("/studio/films/new", data, content_type="multipart/form-data")
    assert response.status_code == 303
    film = db.scalar(select(Film))
    assert film.title == "Caf\u00e9 Noir" and film.slug == "cafe-noir"
    assert film.synopsis == "Line one.\nLine two.\nLine three."


def test_film_service_refuses_what_the_form_would(db: CheckSession) -> None:
    from crowdfund.films import services
    from crowdfund.films.services import FilmInputError

    studio = make_studio_user(db)
    with pytest.raises(FilmInputError) as caught:
        make_film(db, studio, FilmState.DRAFT, title="Two\u2028Lines", logline="Fine")
    assert caught.value.problems["title"].startswith("The title")
    db.rollback()
    film = make_film(db, studio, FilmState.DRAFT, title=" Ame\u0301lie ", logline="Quiet.")
    assert film.title == "Am\u00e9lie"
    with pytest.raises(FilmInputError):
        services.update_film(db, film, film_input(logline="one\x0bline"), poster=None, poster_max_bytes=1)


def test_signup_display_name_with_a_line_break_is_refused(client: Client, db: CheckSession) -> None:
    response = client.post_form(
        "/signup",
        {
            "display_name": "Nia\r\nBcc: all@example.com",
            "email": "nia@example.com",
            "password": PASSWORD,
            "confirm": PASSWORD,
        },
    )
    assert response.status_code == 400 and "Your name must be on one line" in response.get_data(as_text=True)
    assert db.scalar(select(User).where(User.email == "nia@example.com")) is None
    ok = client.post_form(
        "/signup",
        {"display_name": "Zoe\u0308", "email": "zoe@example.com", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert ok.status_code == 303  # "check your e-mail", the same for any address
    db.reread()
    assert db.scalar(select(User.display_name).where(User.email == "zoe@example.com")) == "Zo\u00eb"


def test_admin_studio_name_with_a_separator_is_refused(client: Client, db: CheckSession) -> None:
    client.login(make_user(db, roles=(Role.ADMIN,)).email, PASSWORD)
    response = client.post_form("/admin/studios", {"name": "North\u2029Star"})
    assert response.status_code == 400 and "The studio name must be on one line" in response.get_data(
        as_text=True
    )
    assert db.scalar(select(Studio).where(Studio.name.like("North%"))) is None


def test_tier_extras_and_screening_city_refuse_line_breaks(client: Client, db: CheckSession) -> None:
    studio = make_studio_user(db)
    draft = make_film(db, studio, FilmState.DRAFT)
    funded = make_film(db, studio, FilmState.FUNDED)
    client.login(studio.email, PASSWORD)
    tier = client.post_form(
        f"/studio/films/{draft.id}/tiers",
        {"tier-min_stakes": "2", "tier-tickets": "1", "tier-extras": "Poster\x0cand pin"},
    )
    assert tier.status_code == 400 and "The extras must be on one line" in tier.get_data(as_text=True)
    start = (datetime.now(UTC) + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M")
    screening = client.post_form(
        f"/studio/films/{funded.id}/screenings",
        {
            "screening-cinema": "Rex",
            "screening-city": "Par\u0085is",
            "screening-starts_at": start,
            "screening-seats": "120",
            "screening-min_tier_id": "0",
        },
    )
    assert screening.status_code == 400 and "The city must be on one line" in screening.get_data(as_text=True)
    assert db.scalar(select(func.count()).select_from(RewardTier)) == 0
    assert db.scalar(select(func.count()).select_from(Screening)) == 0


def test_cli_users_create_refuses_a_name_with_a_line_break(app: Flask, db: CheckSession) -> None:
    runner = app.test_cli_runner()
    bad_name = runner.invoke(
        args=[
            "users",
            "create",
            "staff@example.com",
            "--role",
            "finance",
            "--name",
            "Staff\nBcc: x@example.com",
            "--password",
            PASSWORD,
        ]
    )
    assert bad_name.exit_code != 0 and "Your name must be on one line" in bad_name.output
    bad_studio = runner.invoke(
        args=[
            "users",
            "create",
            "maker@example.com",
            "--role",
            "studio",
            "--studio",
            "Big\rPictures",
            "--password",
            PASSWORD,
        ]
    )
    assert bad_studio.exit_code != 0 and "The studio name must be on one line" in bad_studio.output
    db.reread()
    assert db.scalar(select(func.count()).select_from(User)) == 0
    assert db.scalar(select(func.count()).select_from(Studio)) == 0

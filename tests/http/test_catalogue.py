from sqlalchemy.orm import Session

from crowdfund.films.states import FilmState
from tests.conftest import Client
from tests.factories import make_film, make_studio_user


def test_home_lists_only_open_films_with_progress(client: Client, db: Session) -> None:
    studio = make_studio_user(db)
    open_film = make_film(db, studio, FilmState.FUNDING, title="Open Film")
    make_film(db, studio, FilmState.DRAFT, title="Secret Draft")
    make_film(db, studio, FilmState.FUNDED, title="Done Film")
    page = client.get("/").get_data(as_text=True)
    assert "Open Film" in page and "Secret Draft" not in page and "Done Film" not in page
    assert "$0.00</strong> raised of $1,000.00 (0%)" in page and "0 backers" in page
    assert "days left" in page
    assert "Done Film" in client.get("/films?section=funded").get_data(as_text=True)
    assert client.get(f"/films/{open_film.slug}").status_code == 200


def test_pagination(client: Client, db: Session) -> None:
    studio = make_studio_user(db)
    for n in range(14):
        make_film(db, studio, FilmState.FUNDING, title=f"Paged {n:02d}")
    first = client.get("/").get_data(as_text=True)
    second = client.get("/films?section=funding&page=2").get_data(as_text=True)
    assert first.count('<article class="card">') == 12
    assert second.count('<article class="card">') == 2
    assert "Page 2 of 2" in second
    assert client.get("/films?section=funding&page=3").status_code == 404
    assert client.get("/films?page=abc").status_code == 400
    assert client.get("/films?section=nope").status_code == 404


def test_error_pages(client: Client, db: Session) -> None:
    missing = client.get("/films/no-such-film")
    assert missing.status_code == 404
    assert b"No such film." in missing.data  # the domain's message, not the generic page's
    nowhere = client.get("/definitely/not/here")
    assert nowhere.status_code == 404 and b"We could not find that page." in nowhere.data
    assert client.post("/").status_code == 405
    assert client.get("/files/999").status_code == 404


def test_upload_too_large_is_413(client: Client, app) -> None:  # type: ignore[no-untyped-def]
    big = b"x" * (app.config["MAX_CONTENT_LENGTH"] + 10)
    response = client.post("/studio/films/new", data=big, content_type="application/octet-stream")
    assert response.status_code == 413
    assert b"The upload is too large." in response.data

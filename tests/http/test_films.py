import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund.accounts.models import Role
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from tests.conftest import Client
from tests.factories import PASSWORD, make_film, make_studio_user, make_user, png_bytes


def _form(**overrides: object) -> dict:
    deadline = datetime.now(UTC) + timedelta(days=20)
    data = {
        "title": "Harbour Lights",
        "logline": "A ferry captain's last crossing.",
        "synopsis": "Long story.",
        "risks": "Weather.",
        "funding_goal": "10,000.00",
        "stake_price": "50.00",
        "stake_cap": "400",
        "per_backer_limit": "20",
        "deadline": deadline.strftime("%Y-%m-%dT%H:%M"),
        "timezone": "America/New_York",
        "expected_release_date": (deadline + timedelta(days=100)).strftime("%Y-%m-%d"),
        "recoup_share": "50",
        "recoup_multiple": "1.2",
        "profit_share": "12.5",
    }
    data.update(overrides)
    return data


def test_studio_creates_submits_and_admin_approves(client: Client, other_client: Client, db: Session) -> None:
    studio = make_studio_user(db)
    admin = make_user(db, roles=(Role.ADMIN,))
    client.login(studio.email, PASSWORD)
    data = _form(poster=(io.BytesIO(png_bytes()), "poster.png"))
    response = client.post_form("/studio/films/new", data, content_type="multipart/form-data")
    assert response.status_code == 303
    film = db.scalar(select(Film).where(Film.title == "Harbour Lights"))
    assert (
        film.funding_goal_cents == 1_000_000
        and film.profit_share_bps == 1250
        and film.recoup_multiple_bps == 12000
    )
    assert film.timezone == "America/New_York" and film.deadline.tzinfo is not None
    page = client.get(f"/studio/films/{film.id}").get_data(as_text=True)
    assert "Submit for review" in page
    assert client.post_form(f"/studio/films/{film.id}/submit").status_code == 303

    other_client.login(admin.email, PASSWORD)
    assert "Harbour Lights" in other_client.get("/admin/reviews/").get_data(as_text=True)
    assert (
        other_client.post_form(
            f"/admin/reviews/{film.id}/approve", {"approve-csrf_token": other_client.csrf_token()}
        ).status_code
        == 303
    )
    db.reread()
    assert db.get(Film, film.id).state == FilmState.FUNDING
    public = client.get(f"/films/{film.slug}").get_data(as_text=True)
    assert "Harbour Lights" in public and "All or nothing" in public and "12.5%" in public
    # Frozen: the edit page refuses now.
    assert client.get(f"/studio/films/{film.id}/edit").status_code == 303


def test_bad_film_form_comes_back_with_messages(client: Client, db: Session) -> None:
    studio = make_studio_user(db)
    client.login(studio.email, PASSWORD)
    cases = [
        ({"funding_goal": "-5"}, "Enter an amount in dollars"),
        ({"funding_goal": "100000"}, "cannot be reached"),
        ({"stake_cap": "abc"}, "Not a valid integer"),
        ({"per_backer_limit": "999"}, "between 1 stake and the cap"),
        ({"recoup_share": "lots"}, "Enter a number"),
        ({"deadline": "tomorrow"}, "Not a valid datetime"),
        ({"title": "x" * 500}, "120"),
        ({"poster": (io.BytesIO(b"<html>not an image</html>"), "poster.png")}, "not a PNG or JPEG"),
    ]
    for overrides, message in cases:
        response = client.post_form(
            "/studio/films/new", _form(**overrides), content_type="multipart/form-data"
        )
        assert response.status_code == 400, overrides
        assert message in response.get_data(as_text=True), overrides
    assert db.scalar(select(Film)) is None


def test_admin_sends_back_with_reason_the_studio_sees(
    client: Client, other_client: Client, db: Session
) -> None:
    studio = make_studio_user(db)
    admin = make_user(db, roles=(Role.ADMIN,))
    film = make_film(db, studio, FilmState.IN_REVIEW)
    other_client.login(admin.email, PASSWORD)
    empty = other_client.post_form(
        f"/admin/reviews/{film.id}/send-back", {"back-csrf_token": other_client.csrf_token()}
    )
    assert empty.status_code == 400 and "Say why" in empty.get_data(as_text=True)
    response = other_client.post_form(
        f"/admin/reviews/{film.id}/send-back",
        {"back-csrf_token": other_client.csrf_token(), "back-reason": "Poster is blurry."},
    )
    assert response.status_code == 303
    client.login(studio.email, PASSWORD)
    page = client.get(f"/studio/films/{film.id}").get_data(as_text=True)
    assert "Poster is blurry." in page and "Draft" in page


def test_studio_cannot_reach_another_studios_film(client: Client, db: Session) -> None:
    film = make_film(db, make_studio_user(db, "Owner Films"), FilmState.DRAFT)
    intruder = make_studio_user(db, "Other Films")
    client.login(intruder.email, PASSWORD)
    assert client.get(f"/studio/films/{film.id}").status_code == 404
    assert client.get(f"/studio/films/{film.id}/edit").status_code == 404
    assert client.post_form(f"/studio/films/{film.id}/submit").status_code == 404
    assert client.post_form(f"/studio/films/{film.id}/edit", _form(title="Hijacked")).status_code == 404
    assert client.get(f"/films/{film.slug}").status_code == 404
    db.reread()
    assert db.get(Film, film.id).title != "Hijacked"


def test_studio_edits_its_draft(client: Client, db: Session) -> None:
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.DRAFT)
    client.login(studio.email, PASSWORD)
    form_page = client.get(f"/studio/films/{film.id}/edit").get_data(as_text=True)
    assert film.title in form_page
    response = client.post_form(
        f"/studio/films/{film.id}/edit", _form(title="Renamed"), content_type="multipart/form-data"
    )
    assert response.status_code == 303
    db.reread()
    assert db.get(Film, film.id).title == "Renamed"


def test_admin_manages_roles_and_studios(client: Client, db: Session) -> None:
    admin = make_user(db, roles=(Role.ADMIN,))
    target = make_user(db, "target@example.com")
    client.login(admin.email, PASSWORD)
    assert client.post_form("/admin/studios", {"name": "Fresh Studio"}).status_code == 303
    response = client.post_form(f"/admin/users/{target.id}/roles", {"role": "finance", "action": "grant"})
    assert response.status_code == 303
    studio_id = db.scalar(select(__import__("crowdfund.accounts.models", fromlist=["Studio"]).Studio.id))
    client.post_form(
        f"/admin/users/{target.id}/studio",
        {"membership-studio_id": str(studio_id), "membership-csrf_token": client.csrf_token()},
    )
    page = client.get(f"/admin/users/{target.id}").get_data(as_text=True)
    assert "fan, finance, studio" in page
    client.post_form(f"/admin/users/{target.id}/roles", {"role": "finance", "action": "revoke"})
    assert "fan, studio" in client.get(f"/admin/users/{target.id}").get_data(as_text=True)
    own = client.post_form(
        f"/admin/users/{admin.id}/roles", {"role": "admin", "action": "revoke"}, follow_redirects=True
    )
    assert "cannot remove your own admin role" in own.get_data(as_text=True)


def test_every_wrong_film_field_is_reported_in_one_round(client: Client, db: Session) -> None:
    studio = make_studio_user(db)
    client.login(studio.email, PASSWORD)
    deadline = datetime.now(UTC) + timedelta(days=20)
    data = _form(
        title="",
        stake_price="20,000.00",
        recoup_share="0",
        stake_cap="lots",
        per_backer_limit="999",
        expected_release_date=(deadline - timedelta(days=3)).strftime("%Y-%m-%d"),
        deadline=deadline.strftime("%Y-%m-%dT%H:%M"),
    )
    response = client.post_form("/studio/films/new", data, content_type="multipart/form-data")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    # Field checks (WTForms) and film rules (FilmInput) together, each beside its field:
    for message in (
        "Enter a title.",
        "Not a valid integer",
        "A stake costs between $1.00 and $10,000.00.",
        "The recoupment share is above 0% and at most 100%.",
        "The release comes after the funding deadline.",
    ):
        assert message in page, message
    # A rule that reads the broken cap is not judged against a placeholder.
    assert "between 1 stake and the cap" not in page
    assert db.scalar(select(Film)) is None

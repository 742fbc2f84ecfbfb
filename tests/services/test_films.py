from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund.accounts.models import Role
from crowdfund.errors import Conflict, DomainError, Forbidden, InvalidTransition, NotFound
from crowdfund.films import services
from crowdfund.films.models import FilmEvent
from crowdfund.films.states import FilmState
from crowdfund.funding.models import FilmInventory
from crowdfund.funding.queries import visible_film
from crowdfund.workflows import reactions
from tests.factories import film_input, make_film, make_studio_user, make_user, png_bytes


def test_draft_review_approve(db: Session) -> None:
    studio = make_studio_user(db)
    admin = make_user(db, roles=(Role.ADMIN,))
    now = datetime.now(UTC)
    film = services.create_film(db, studio, film_input(now), poster=png_bytes(), poster_max_bytes=10**6)
    assert film.state == FilmState.DRAFT
    services.submit_for_review(db, film, studio, now=now)
    assert film.state == FilmState.IN_REVIEW
    with pytest.raises(Conflict):
        services.update_film(db, film, film_input(now), poster=None, poster_max_bytes=10**6)
    reactions.approve_film(db, film, admin, now=now)
    assert film.state == FilmState.FUNDING and film.opened_at == now
    inventory = db.get(FilmInventory, film.id)
    assert (inventory.cap, inventory.sold, inventory.held) == (film.stake_cap, 0, 0)
    events = db.scalars(select(FilmEvent).where(FilmEvent.film_id == film.id).order_by(FilmEvent.id)).all()
    assert [(e.from_state, e.to_state) for e in events] == [("draft", "in_review"), ("in_review", "funding")]
    assert events[1].actor_id == admin.id


def test_send_back_needs_a_reason_the_studio_sees(db: Session) -> None:
    studio = make_studio_user(db)
    admin = make_user(db, roles=(Role.ADMIN,))
    film = make_film(db, studio, FilmState.IN_REVIEW)
    with pytest.raises(DomainError):
        services.send_back(db, film, admin, "  ", now=datetime.now(UTC))
    services.send_back(db, film, admin, "The synopsis is too short.", now=datetime.now(UTC))
    assert film.state == FilmState.DRAFT
    assert film.review_note == "The synopsis is too short."


def test_submit_needs_poster_and_future_deadline(db: Session) -> None:
    studio = make_studio_user(db)
    now = datetime.now(UTC)
    film = services.create_film(db, studio, film_input(now), poster=None, poster_max_bytes=10**6)
    with pytest.raises(DomainError, match="poster"):
        services.submit_for_review(db, film, studio, now=now)
    services.update_film(db, film, film_input(now), poster=png_bytes(), poster_max_bytes=10**6)
    with pytest.raises(DomainError, match="deadline"):
        services.submit_for_review(db, film, studio, now=now + timedelta(days=30))


def test_refused_transition_changes_nothing(db: Session) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDED)
    with pytest.raises(InvalidTransition):
        services.change_film_state(db, film, FilmState.FUNDING, now=datetime.now(UTC))
    db.rollback()
    assert film.state == FilmState.FUNDED


def test_only_studio_members_create_and_see_their_films(db: Session) -> None:
    fan = make_user(db)
    with pytest.raises(Forbidden):
        services.create_film(db, fan, film_input(), poster=None, poster_max_bytes=10**6)
    mine = make_studio_user(db, "Mine")
    theirs = make_studio_user(db, "Theirs")
    film = make_film(db, mine, FilmState.DRAFT)
    assert services.studio_film(db, mine, film.id).id == film.id
    with pytest.raises(NotFound):
        services.studio_film(db, theirs, film.id)
    with pytest.raises(NotFound):
        visible_film(db, film.slug, fan)
    assert visible_film(db, film.slug, mine).id == film.id


def test_slugs_are_unique(db: Session) -> None:
    studio = make_studio_user(db)
    a = make_film(db, studio, title="Same Name")
    b = make_film(db, studio, title="Same Name")
    assert (a.slug, b.slug) == ("same-name", "same-name-2")


@pytest.mark.parametrize(
    "data", [b"GIF89a" + b"\0" * 50, b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"%PDF-1.4", b""]
)
def test_poster_checked_by_content(db: Session, data: bytes) -> None:
    studio = make_studio_user(db)
    with pytest.raises(DomainError):
        services.create_film(db, studio, film_input(), poster=data, poster_max_bytes=10**6)


def test_poster_size_limit_and_jpeg(db: Session) -> None:
    studio = make_studio_user(db)
    with pytest.raises(DomainError, match="too large"):
        services.create_film(db, studio, film_input(), poster=png_bytes(), poster_max_bytes=10)
    film = services.create_film(
        db, studio, film_input(), poster=png_bytes(fmt="JPEG"), poster_max_bytes=10**6
    )
    assert film.poster_id is not None

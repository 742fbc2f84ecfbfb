"""Test data builders. Each commits, so the app under test sees the rows."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, date, datetime, timedelta

from PIL import Image
from sqlalchemy.orm import Session

from crowdfund.accounts import studios, users
from crowdfund.accounts.models import Role, User
from crowdfund.films import services as films
from crowdfund.films.models import Film
from crowdfund.films.rules import FilmInput
from crowdfund.films.states import FilmState
from crowdfund.site.web import app_services
from crowdfund.workflows import reactions

PASSWORD = "correct horse battery"
_seq = itertools.count(1)


def png_bytes(width: int = 40, height: int = 60, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 20, 40)).save(buffer, fmt)
    return buffer.getvalue()


def make_user(
    db: Session,
    email: str | None = None,
    roles: tuple[Role, ...] = (Role.FAN,),
    name: str = "Test User",
    verified: bool = True,
) -> User:
    """A user whose e-mail address is confirmed (verified=False: as just signed up)."""
    user = users.create_user(
        db,
        email or f"user{next(_seq)}@example.com",
        PASSWORD,
        name,
        roles=roles,
        email_verified_at=datetime.now(UTC) if verified else None,
    )
    db.commit()
    return user


def make_studio_user(db: Session, studio_name: str = "Studio One", email: str | None = None) -> User:
    user = users.create_user(
        db,
        email or f"studio{next(_seq)}@example.com",
        PASSWORD,
        "Studio Person",
        roles=(),
        email_verified_at=datetime.now(UTC),
    )
    studios.set_studio(db, user, studios.get_or_create_studio(db, studio_name))
    db.commit()
    return user


def film_input(now: datetime | None = None, **overrides: object) -> FilmInput:
    now = now or datetime.now(UTC)
    deadline = (now + timedelta(days=30)).replace(microsecond=0)
    values: dict[str, object] = dict(
        title=f"Film {next(_seq)}",
        logline="A test film.",
        synopsis="Things happen.",
        risks="",
        funding_goal_cents=100_000,
        stake_price_cents=5000,
        stake_cap=100,
        per_backer_limit=10,
        deadline=deadline,
        timezone="UTC",
        expected_release_date=(deadline + timedelta(days=200)).date(),
        recoup_share_bps=5000,
        recoup_multiple_bps=12000,
        profit_share_bps=1000,
    )
    values.update(overrides)
    return FilmInput(**values)  # type: ignore[arg-type]


def make_film(
    db: Session,
    studio_user: User,
    state: FilmState = FilmState.FUNDING,
    admin: User | None = None,
    **overrides: object,
) -> Film:
    now = datetime.now(UTC)
    film = films.create_film(
        db, studio_user, film_input(now, **overrides), poster=png_bytes(), poster_max_bytes=2_000_000
    )
    if state != FilmState.DRAFT:
        films.change_film_state(db, film, FilmState.IN_REVIEW, now=now, actor=studio_user)
    if state not in (FilmState.DRAFT, FilmState.IN_REVIEW):
        reactions.change_film_state(db, film, FilmState.FUNDING, now=now, actor=admin)
    if state in (FilmState.FUNDED, FilmState.RELEASED):
        films.change_film_state(db, film, FilmState.FUNDED, now=now)
    if state == FilmState.RELEASED:
        films.change_film_state(db, film, FilmState.RELEASED, now=now)
    if state == FilmState.FAILED:
        films.change_film_state(db, film, FilmState.FAILED, now=now)
    db.commit()
    return film


def release_date(days: int) -> date:
    return (datetime.now(UTC) + timedelta(days=days)).date()


# --- buying, through the real services and a real localstripe -----------------------

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"
THREE_DS_CARD = "4000002500003155"


def hold(
    db: Session, user: User, film: Film, units: int, *, now: datetime | None = None, key: str | None = None
):  # type: ignore[no-untyped-def]
    from crowdfund.funding.holds import HoldRequest, hold_stakes

    order = hold_stakes(
        db,
        user,
        HoldRequest(film.id, units, key or f"key-{next(_seq):012d}-xxxxxxxx"),
        now=now or datetime.now(UTC),
        hold_window=timedelta(minutes=15),
    )
    db.commit()
    return order


def pay(db: Session, app, order, card: str = GOOD_CARD, *, now: datetime | None = None):  # type: ignore[no-untyped-def]
    """Collect `card` as the browser would, then let the server charge it."""
    from crowdfund.dev.localstripe_server import confirm_card_setup
    from crowdfund.workflows.checkout import checkout_setup_intent, pay_order

    gateway = app_services(app).gateway
    from crowdfund.errors import Conflict

    try:
        setup = checkout_setup_intent(db, order, gateway)  # what the checkout page does
    except Conflict:
        # The hold is gone (the page would not offer to pay); pay_order says so.
        setup = gateway.create_setup_intent({})
    confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], setup.client_secret, card
    )
    result = pay_order(db, order, setup.id, gateway, now=now or datetime.now(UTC))
    db.commit()
    return result


def buy(db: Session, app, user: User, film: Film, units: int, *, now: datetime | None = None):  # type: ignore[no-untyped-def]
    order = hold(db, user, film, units, now=now)
    result = pay(db, app, order, now=now)
    assert result.status == "paid", result
    db.refresh(order)
    return order

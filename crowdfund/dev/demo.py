"""Demo data for `make demo` (or `flask --app crowdfund.dev.server:cli_app demo seed`). Never run against production."""

from __future__ import annotations

import io
import secrets
from datetime import UTC, date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import click
from flask import current_app
from flask.cli import AppGroup
from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund.accounts import studios, users
from crowdfund.accounts.models import Role, User
from crowdfund.db import utcnow
from crowdfund.films import services as films
from crowdfund.films.models import Film
from crowdfund.films.rules import FilmInput
from crowdfund.films.states import FilmState
from crowdfund.funding.holds import HoldRequest, hold_stakes
from crowdfund.payouts import box_office
from crowdfund.rewards import screenings, tiers
from crowdfund.rewards.rules import TierInput
from crowdfund.site.web import app_services
from crowdfund.workflows import payout_run, reactions
from crowdfund.workflows.checkout import checkout_setup_intent, pay_order
from crowdfund.workflows.round_close import close_rounds

DEMO_PASSWORD = "demo-password-1"

FILMS = [
    # title, logline, final state, days to deadline (negative: past)
    (
        "The Lighthouse Keeper's Daughter",
        "A storm, a secret and the last lighthouse on the Atlantic coast.",
        FilmState.FUNDING,
        21,
    ),
    ("Neon Harvest", "Farmers in 2071 grow the city's light. One of them stops.", FilmState.FUNDING, 9),
    ("Paper Moons", "Two rival kite makers, one festival, no second chances.", FilmState.FUNDING, 40),
    ("Salt Road", "A caravan crosses the last desert road before the border closes.", FilmState.FUNDED, -10),
    ("Quiet Machines", "A repair shop for robots that no longer want to work.", FilmState.RELEASED, -120),
    ("The Long Winter", "A village waits for a spring that does not come.", FilmState.FAILED, -5),
    ("Echo Valley", "A sound engineer hears a voice on every tape she records.", FilmState.IN_REVIEW, 30),
    ("Untitled Heist Comedy", "Five retired magicians rob the casino that fired them.", FilmState.DRAFT, 60),
    ("Second Draft", "A writer's characters refuse the ending.", FilmState.CANCELLED, 30),
]

#: Films whose backers get screening tickets, and their tiers (stakes or more, tickets, extras).
REWARD_FILMS = ("Salt Road", "Quiet Machines")
DEMO_TIERS = [
    (1, 1, ""),
    (10, 2, "Signed poster"),
    (40, 4, "Premiere invitation and your name in the credits"),
]

COLOURS = [(138, 28, 59), (23, 96, 58), (30, 60, 120), (150, 90, 20), (70, 40, 110), (20, 110, 120)]


def poster_png(title: str, index: int) -> bytes:
    image = Image.new("RGB", (400, 600), COLOURS[index % len(COLOURS)])
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 380, 580), outline=(255, 255, 255), width=4)
    font = ImageFont.load_default(size=34)
    y = 220
    for word in title.split():
        draw.text((44, y), word.upper(), fill=(255, 255, 255), font=font)
        y += 44
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _film_input(title: str, logline: str, days: int) -> FilmInput:
    now = utcnow()
    deadline = (now + timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    return FilmInput(
        title=title,
        logline=logline,
        synopsis=f"{logline}\n\nA feature film in development. This synopsis is demo text.",
        risks="Principal photography depends on weather permits at our coastal locations.",
        funding_goal_cents=500_000,
        stake_price_cents=5000,
        stake_cap=400,
        per_backer_limit=60,
        deadline=deadline,
        timezone="America/Los_Angeles",
        expected_release_date=(deadline + timedelta(days=240)).date() if days > -200 else date.today(),
        recoup_share_bps=5000,
        recoup_multiple_bps=12000,
        profit_share_bps=1000,
    )


def _walk_to(session: Session, film: Film, target: FilmState, studio_user: User, admin: User) -> None:
    """Move a new draft to `target` through the real state machine."""
    now = utcnow()
    if target == FilmState.DRAFT:
        return
    if target == FilmState.CANCELLED:
        films.withdraw(session, film, studio_user, now=now)
        return
    # Past deadlines: open the film as if it had been approved before its deadline.
    opened = min(now, film.deadline - timedelta(days=30))
    films.change_film_state(session, film, FilmState.IN_REVIEW, now=opened, actor=studio_user)
    if target == FilmState.IN_REVIEW:
        return
    reactions.change_film_state(session, film, FilmState.FUNDING, now=opened, actor=admin)
    if target == FilmState.FUNDING:
        return
    decided = film.deadline
    if target == FilmState.FAILED:
        films.change_film_state(session, film, FilmState.FAILED, now=decided)
        return
    films.change_film_state(session, film, FilmState.FUNDED, now=decided)
    if target == FilmState.RELEASED:
        films.change_film_state(
            session, film, FilmState.RELEASED, now=decided + timedelta(days=60), actor=studio_user
        )


# (film index, fan number, stakes) bought in the demo, through the real payment flow.
PURCHASES = [
    (0, 1, 4),
    (0, 2, 10),
    (0, 3, 2),
    (1, 1, 30),
    (1, 2, 40),
    (1, 4, 12),
    (3, 1, 20),
    (3, 2, 40),
    (3, 3, 40),
    (3, 4, 40),
    (3, 1, 20),
    (3, 3, 1),
    (4, 1, 40),
    (4, 2, 40),
    (4, 3, 40),
    (4, 4, 40),
    (4, 2, 1),
    (5, 1, 3),
    (5, 2, 5),
]


def _buy(
    session: Session, film: Film, fan: User, units: int, gateway: Any, stripe_base: str, publishable_key: str
) -> None:
    # Only with localstripe (aiohttp, a development dependency).
    from crowdfund.dev.localstripe_server import confirm_card_setup

    when = min(utcnow(), film.deadline - timedelta(days=3))
    order = hold_stakes(
        session,
        fan,
        HoldRequest(film.id, units, f"demo-{film.id}-{fan.id}-{units}-{secrets.token_hex(8)}"),
        now=when,
        hold_window=timedelta(minutes=15),
    )
    session.commit()
    setup = checkout_setup_intent(session, order, gateway)
    confirm_card_setup(stripe_base, publishable_key, setup.client_secret, "4242424242424242")
    pay_order(session, order, setup.id, gateway, now=when + timedelta(minutes=1))
    session.commit()


def seed(
    session: Session,
    gateway: Any = None,
    stripe_base: str = "",
    publishable_key: str = "",
    fee_bps: int = 500,
) -> list[tuple[str, str]]:
    """Demo users and films in every state. With a gateway (localstripe), fans
    also buy stakes and past rounds are closed, through the real services."""
    logins: list[tuple[str, str]] = []
    verified = {"email_verified_at": utcnow()}  # demo addresses are confirmed, so every demo fan can buy
    admin = users.create_user(
        session, "admin@example.com", DEMO_PASSWORD, "Ada Admin", roles=(Role.ADMIN,), **verified
    )
    finance = users.create_user(
        session, "finance@example.com", DEMO_PASSWORD, "Fin Ance", roles=(Role.FINANCE,), **verified
    )
    # The one who starts a payout run cannot also mark it paid: a second finance login confirms transfers.
    checker = users.create_user(
        session, "finance2@example.com", DEMO_PASSWORD, "Fiona Check", roles=(Role.FINANCE,), **verified
    )
    studio_user = users.create_user(
        session, "studio@example.com", DEMO_PASSWORD, "Sam Studio", roles=(), **verified
    )
    studio = studios.create_studio(session, "Northlight Pictures")
    studios.set_studio(session, studio_user, studio)
    logins += [
        ("admin", admin.email),
        ("finance", finance.email),
        ("finance", checker.email),
        ("studio", studio_user.email),
    ]
    fans = []
    for n, name in enumerate(["Fay Fan", "Femi Fan", "Fumiko Fan", "Felix Fan"], start=1):
        fan = users.create_user(
            session, f"fan{n}@example.com", DEMO_PASSWORD, name, roles=(Role.FAN,), **verified
        )
        fans.append(fan)
        logins.append(("fan", fan.email))
    created = []
    for index, (title, logline, target, days) in enumerate(FILMS):
        film = films.create_film(
            session,
            studio_user,
            _film_input(title, logline, days),
            poster=poster_png(title, index),
            poster_max_bytes=2 * 1024 * 1024,
        )
        created.append((film, target))
        if title in REWARD_FILMS:
            # Tiers are terms: set while the film is still a draft.
            for min_stakes, tickets, extras in DEMO_TIERS:
                tiers.add_tier(session, film, TierInput(min_stakes, tickets, extras))
        # Films that were sold go through funding first; the round close decides them.
        first_stop = (
            FilmState.FUNDING
            if target in (FilmState.FUNDED, FilmState.RELEASED, FilmState.FAILED)
            else target
        )
        _walk_to(session, film, first_stop if gateway else target, studio_user, admin)
    session.commit()
    if gateway is None:
        _schedule_screenings(session, created)
        session.commit()
        return logins
    for film_index, fan_number, units in PURCHASES:
        _buy(
            session,
            created[film_index][0],
            fans[fan_number - 1],
            units,
            gateway,
            stripe_base,
            publishable_key,
        )
    close_rounds(session, gateway, now=utcnow(), hold_window=timedelta(minutes=15), fee_bps=fee_bps)
    for film, target in created:
        if target == FilmState.RELEASED:
            films.mark_released(
                session,
                session.get_one(Film, film.id),
                session.get_one(User, studio_user.id),
                now=utcnow() - timedelta(days=30),
            )
    _schedule_screenings(session, created)
    session.commit()
    released = [film.id for film, target in created if target == FilmState.RELEASED]
    for film_id in released:
        _box_office(
            session,
            session.get_one(Film, film_id),
            session.get_one(User, studio_user.id),
            session.get_one(User, finance.id),
        )
    return logins


def _box_office(session: Session, film: Film, studio_user: User, finance: User) -> None:
    """Two weeks of box office, approved and paid out, and a third week waiting
    for finance: statements for the demo fans, a decision for the demo finance."""
    today = utcnow().date()
    weeks = [
        (today - timedelta(days=20), today - timedelta(days=14), 420_000),
        (today - timedelta(days=13), today - timedelta(days=7), 1_350_000),
    ]
    for start, end, cents in weeks:
        report = box_office.file_report(
            session, film, studio_user, box_office.ReportInput(start, end, cents, "Demo week"), now=utcnow()
        )
        box_office.approve_report(session, report, finance, now=utcnow())
        session.commit()
        payout_run.run_payout(session, report, finance, now=utcnow())
    box_office.file_report(
        session,
        film,
        studio_user,
        box_office.ReportInput(today - timedelta(days=6), today, 610_000, "Demo week 3"),
        now=utcnow(),
    )
    session.commit()


def _schedule_screenings(session: Session, created: list[tuple[Film, FilmState]]) -> None:
    """Screenings of the funded and released demo films; tickets were issued by
    the round close when the film became funded."""
    now = utcnow().replace(minute=0, second=0, microsecond=0)
    for created_film, _target in created:
        film = session.get(Film, created_film.id)
        if film is None or film.title not in REWARD_FILMS or film.state not in screenings.SCREENING_STATES:
            continue
        top_tier = tiers.film_tiers(session, film.id)[-1]
        for days, cinema, city, seats, tier_id in (
            (14, "The Castro Theatre", "San Francisco", 120, None),
            (21, "Vista Theater", "Los Angeles", 3, None),
            (30, "Egyptian Theatre", "Los Angeles", 40, top_tier.id),
        ):
            local_day = (now + timedelta(days=days)).astimezone(ZoneInfo(film.timezone))
            start = local_day.replace(hour=19).astimezone(UTC)  # 7 pm where the film is shown
            screenings.schedule_screening(
                session,
                film,
                screenings.ScreeningInput(
                    cinema=cinema, city=city, starts_at=start, seats=seats, min_tier_id=tier_id
                ),
                now=utcnow(),
            )


@click.group("demo", cls=AppGroup, help="Demo data (development only).")
def demo_command() -> None:
    pass


@demo_command.command("seed")
def seed_command() -> None:
    """Fill an empty database with demo users and films."""
    if current_app.config["ENV_NAME"] == "production":
        raise click.ClickException("Refusing to seed demo data in production.")
    with app_services().sessions() as session:
        if session.scalar(select(User.id).limit(1)) is not None:
            raise click.ClickException("The database already has users; demo seed wants an empty one.")
        logins = seed(session)
        session.commit()
    click.echo(f"Demo logins (password for all: {DEMO_PASSWORD}):")
    for role, email in logins:
        click.echo(f"  {role:8} {email}")

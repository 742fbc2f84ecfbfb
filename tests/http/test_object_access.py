"""Changing an id in the URL never reaches someone else's object.

Every route of the URL map that takes an object id is tried by another fan
and by a member of another studio, pointed at the first fan's and the first
studio's objects (order, receipt, ticket, statement, film draft, box-office
report, screening, tier). Each answer must be 403 or 404, and nothing may
change. A new route with an id cannot escape: it is found in the URL map."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask, url_for
from sqlalchemy import func, select

from crowdfund.accounts.models import Role
from crowdfund.audit import AuditEvent
from crowdfund.films.models import Film
from crowdfund.films.services import change_film_state
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order
from crowdfund.payouts import box_office
from crowdfund.payouts.models import PayoutStatement
from crowdfund.rewards.models import RewardTier
from crowdfund.rewards.rules import TierInput
from crowdfund.rewards.tiers import add_tier
from crowdfund.workflows import payout_run
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, buy, make_film, make_studio_user, make_user
from tests.rewards_factories import add_screening, give_ticket


@pytest.fixture
def owned(db: CheckSession, app: Flask):  # type: ignore[no-untyped-def]
    """Objects of fan A and studio A."""
    studio_a = make_studio_user(db, "Studio A")
    fan_a = make_user(db, "fan-a@example.com")
    draft = make_film(db, studio_a, FilmState.DRAFT)
    tier = add_tier(db, draft, TierInput(2, 1, ""))
    db.commit()
    film = make_film(
        db, studio_a, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=10_000
    )
    order = buy(db, app, fan_a, film, 2)
    film = db.get(Film, film.id)
    change_film_state(db, film, FilmState.FUNDED, now=datetime.now(UTC))
    change_film_state(db, film, FilmState.RELEASED, now=datetime.now(UTC) - timedelta(days=9))
    db.commit()
    finance = make_user(db, roles=(Role.FINANCE,))
    today = datetime.now(UTC).date()
    report = box_office.file_report(
        db,
        film,
        studio_a,
        box_office.ReportInput(today, today, 5_000, ""),
        now=datetime.now(UTC),
        attachment=b"a,b\n1,2\n",
    )
    box_office.approve_report(db, report, finance, now=datetime.now(UTC))
    db.commit()
    run = payout_run.run_payout(db, report, finance, now=datetime.now(UTC))
    statement = db.scalar(select(PayoutStatement).where(PayoutStatement.user_id == fan_a.id))
    screening = add_screening(db, film)
    ticket = give_ticket(db, film, fan_a)
    return {
        "film_id": draft.id,
        "tier_id": tier.id,
        "reference": order.reference,
        "ticket_id": ticket.id,
        "statement_id": statement.id,
        "report_id": report.id,
        "run_id": run.id,
        "screening_id": screening.id,
    }


def object_routes(app: Flask, kind: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(endpoint, method, id arguments) of routes open to `kind` that take an object id."""
    found = []
    for rule in app.url_map.iter_rules():
        roles = getattr(app.view_functions[rule.endpoint], "required_roles", None)
        ids = tuple(arg for arg in rule.arguments if arg != "slug")
        if not roles or kind not in roles or not ids:
            continue
        found.append((rule.endpoint, "GET" if "GET" in rule.methods else "POST", ids))
    return found


def snapshot(db: CheckSession) -> tuple[int, ...]:
    db.reread()
    return (
        db.scalar(select(func.count()).select_from(AuditEvent)),
        db.scalar(select(func.count()).select_from(Order).where(Order.status != "paid")),
        db.scalar(select(func.count()).select_from(RewardTier)),
        db.scalar(select(func.count()).select_from(Film).where(Film.title.like("Hijack%"))),
    )


@pytest.mark.parametrize("kind", ["fan", "studio"])
def test_another_user_cannot_reach_the_objects(
    client: Client,
    db: CheckSession,
    app: Flask,
    owned,  # type: ignore[no-untyped-def]
    kind: str,
) -> None:
    intruder = make_user(db, "fan-b@example.com") if kind == "fan" else make_studio_user(db, "Studio B")
    client.login(intruder.email, PASSWORD)
    routes = object_routes(app, kind)
    assert len(routes) >= (6 if kind == "fan" else 8)
    before = snapshot(db)
    for endpoint, method, ids in routes:
        with app.test_request_context():
            url = url_for(endpoint, **{arg: owned[arg] for arg in ids})
        if method == "GET":
            response = client.get(url)
        else:
            response = client.post_form(
                url,
                {
                    "title": "Hijacked",
                    "reason": "x",
                    "code": "x",
                    "units": "1",
                    "min_stakes": "1",
                    "tickets": "1",
                    "screening_id": str(owned["screening_id"]),
                    "net_receipts": "1",
                    "period_start": "2026-01-01",
                    "period_end": "2026-01-02",
                    "bank_reference": "x",
                    "cinema": "x",
                    "city": "x",
                    "seats": "5",
                    "starts_at": "2030-01-01T10:00",
                },
            )
        response.get_data()
        assert response.status_code in (403, 404), f"{kind} reached {endpoint} {url}: {response.status_code}"
    assert snapshot(db) == before


def test_a_drafts_poster_is_private_until_the_film_is_public(client: Client, db: CheckSession) -> None:
    studio = make_studio_user(db, "Poster Studio")
    draft = make_film(db, studio, FilmState.DRAFT)
    public = make_film(db, studio, FilmState.FUNDING)
    assert client.get(f"/files/{public.poster_id}").status_code == 200
    assert client.get(f"/files/{draft.poster_id}").status_code == 404
    client.login(make_studio_user(db, "Nosy Studio").email, PASSWORD)
    assert client.get(f"/files/{draft.poster_id}").status_code == 404
    client.post_form("/logout")
    client.login(studio.email, PASSWORD)
    assert client.get(f"/files/{draft.poster_id}").status_code == 200

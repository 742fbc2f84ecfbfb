"""The audit log: every sensitive action appended with who, when, before and after;
nothing can change or delete an entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from crowdfund.accounts.models import Role
from crowdfund.audit import AuditEvent, AuditLogIsAppendOnly
from crowdfund.films.models import Film
from crowdfund.films.services import change_film_state
from crowdfund.films.states import FilmState
from crowdfund.payouts import box_office, runs
from crowdfund.rewards.bookings import book_ticket
from crowdfund.rewards.check_in import redeem_ticket
from crowdfund.workflows import payout_run
from crowdfund.workflows.reactions import cancel_order
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, buy, make_film, make_studio_user, make_user
from tests.rewards_factories import add_screening, give_ticket


def events(db: CheckSession, action: str) -> list[AuditEvent]:
    db.reread()
    return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def test_admin_actions_are_recorded_with_who_and_before_after(client: Client, db: CheckSession) -> None:
    admin = make_user(db, "boss@example.com", roles=(Role.ADMIN,))
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.IN_REVIEW)
    target = make_user(db, "promote@example.com")
    client.login(admin.email, PASSWORD)
    client.post_form(f"/admin/reviews/{film.id}/approve", {"approve-csrf_token": client.csrf_token()})
    client.post_form(f"/admin/users/{target.id}/roles", {"role": "finance", "action": "grant"})
    client.post_form(f"/admin/users/{target.id}/roles", {"role": "finance", "action": "revoke"})

    approved = events(db, "film.state")[-1]
    assert (approved.actor_id, approved.object_id) == (admin.id, str(film.id))
    assert (approved.before_data, approved.after_data) == ({"state": "in_review"}, {"state": "funding"})
    grant, revoke = events(db, "role.grant")[-1], events(db, "role.revoke")[-1]
    assert grant.actor_id == revoke.actor_id == admin.id
    assert grant.before_data == {"roles": ["fan"]} and grant.after_data == {"roles": ["fan", "finance"]}
    assert revoke.after_data == {"roles": ["fan"]}

    page = client.get("/admin/audit?action=role.grant").get_data(as_text=True)
    assert f"user {target.id}" in page
    assert "boss@example.com" in page and "role.revoke" not in page.split("<tbody>")[1]
    assert client.get("/admin/audit?since=not-a-date").status_code == 400
    assert client.get("/admin/audit?page=x").status_code == 400
    fan = make_user(db)
    client.post_form("/logout")
    client.login(fan.email, PASSWORD)
    assert client.get("/admin/audit").status_code == 403


def test_money_and_check_in_actions_are_recorded(db: CheckSession, app: Flask) -> None:
    studio = make_studio_user(db)
    film = make_film(
        db, studio, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=10_000
    )
    fan = make_user(db)
    order = buy(db, app, fan, film, 2)
    cancel_order(db, order, fan, now=datetime.now(UTC))
    db.commit()
    refund = events(db, "refund.decided")[-1]
    assert (refund.actor_id, refund.object_id, refund.detail) == (
        fan.id,
        order.reference,
        "cancelled by the backer",
    )

    buy(db, app, fan, film, 3)
    film = db.get(Film, film.id)
    change_film_state(db, film, FilmState.FUNDED, now=datetime.now(UTC))
    change_film_state(db, film, FilmState.RELEASED, now=datetime.now(UTC) - timedelta(days=10))
    db.commit()
    finance = make_user(db, roles=(Role.FINANCE,))
    today = datetime.now(UTC).date()
    report = box_office.file_report(
        db, film, studio, box_office.ReportInput(today, today, 10_000, ""), now=datetime.now(UTC)
    )
    box_office.approve_report(db, report, finance, now=datetime.now(UTC))
    db.commit()
    run = payout_run.run_payout(db, report, finance, now=datetime.now(UTC))
    checker = make_user(db, roles=(Role.FINANCE,))  # not the person who started the run
    runs.mark_paid(db, run, checker, "REF-1", now=datetime.now(UTC))
    db.commit()
    assert events(db, "box_office.approve")[-1].actor_id == finance.id
    assert events(db, "payout.run")[-1].after_data["pool_cents"] == run.pool_cents
    paid = events(db, "payout.paid")[-1]
    assert paid.before_data == {"status": "computed"} and paid.after_data["bank_reference"] == "REF-1"

    screening = add_screening(db, film)
    ticket = give_ticket(db, film, fan)
    book_ticket(db, fan, ticket.id, screening.id, now=datetime.now(UTC))
    db.commit()
    studio = db.get(type(studio), studio.id)
    redeem_ticket(db, studio, screening, ticket.code, now=datetime.now(UTC))
    db.commit()
    check_in = events(db, "ticket.check_in")[-1]
    assert check_in.actor_id == studio.id and check_in.after_data["result"] == "admitted"


def test_nothing_can_edit_or_delete_an_entry(db: CheckSession) -> None:
    admin = make_user(db, roles=(Role.ADMIN,))
    from crowdfund.accounts.roles import grant_role

    grant_role(db, make_user(db), "finance", acting_user=admin)
    db.commit()
    entry = db.scalars(select(AuditEvent)).first()
    entry.detail = "tampered"
    with pytest.raises(AuditLogIsAppendOnly):
        db.flush()
    db.rollback()
    db.delete(db.scalars(select(AuditEvent)).first())
    with pytest.raises(AuditLogIsAppendOnly):
        db.flush()
    db.rollback()
    if db.get_bind().dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            db.execute(text("UPDATE audit_events SET detail = 'tampered'"))
        db.rollback()
        with pytest.raises(DBAPIError, match="append-only"):
            db.execute(text("DELETE FROM audit_events"))
        db.rollback()
    assert db.scalars(select(AuditEvent.detail)).all() == [""]

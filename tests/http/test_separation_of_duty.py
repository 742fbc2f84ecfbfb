"""Separation of duty, through HTTP: nobody decides on their own studio's
reports or films, and the person who starts a payout run does not also
confirm it paid. Each refusal is a 403 with a message; nothing changes and
the audit log gains nothing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from crowdfund import ledger
from crowdfund.accounts.models import Role
from crowdfund.accounts.roles import grant_role
from crowdfund.audit import AuditEvent
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_film, make_studio_user, make_user
from tests.http.test_payouts_http import file_report, released  # noqa: F401


def audit_count(db: CheckSession) -> int:
    db.reread()
    return db.scalar(select(func.count()).select_from(AuditEvent))


def studio_member_with(db: CheckSession, role: str, studio_name: str = "Studio One"):  # type: ignore[no-untyped-def]
    member = make_studio_user(db, studio_name)
    grant_role(db, member, role)
    db.commit()
    return member


def test_finance_member_of_the_films_studio_cannot_decide_its_reports(
    client: Client,
    other_client: Client,  # type: ignore[no-untyped-def]
    db: CheckSession,
    released,
) -> None:
    film, today = released["film"], released["now"].date()
    client.login(released["studio"].email, PASSWORD)
    assert file_report(client, film, "400.00", today, today + timedelta(days=6)).status_code == 303
    db.reread()
    report = db.scalar(select(BoxOfficeReport))
    insider = studio_member_with(db, "finance", film.studio.name)
    before = audit_count(db)

    other_client.login(insider.email, PASSWORD)
    approve = other_client.post_form(
        f"/finance/reports/{report.id}/approve", {"approve-csrf_token": other_client.csrf_token()}
    )
    assert approve.status_code == 403
    assert "member of this film&#39;s studio" in approve.get_data(as_text=True)
    reject = other_client.post_form(
        f"/finance/reports/{report.id}/reject",
        {"reject-csrf_token": other_client.csrf_token(), "reject-reason": "no"},
    )
    assert reject.status_code == 403
    db.reread()
    assert db.get(BoxOfficeReport, report.id).status == "submitted"
    assert audit_count(db) == before

    # Finance staff of another studio (or of none) decide as before.
    outsider = studio_member_with(db, "finance", "Another Studio")
    other_client.post_form("/logout")
    other_client.login(outsider.email, PASSWORD)
    assert (
        other_client.post_form(
            f"/finance/reports/{report.id}/approve", {"approve-csrf_token": other_client.csrf_token()}
        ).status_code
        == 303
    )
    db.reread()
    assert db.get(BoxOfficeReport, report.id).status == "approved"


def test_admin_member_of_a_studio_cannot_approve_its_films(client: Client, db: CheckSession) -> None:
    studio = make_studio_user(db, "Own Studio")
    film = make_film(db, studio, FilmState.IN_REVIEW)
    insider = studio_member_with(db, "admin", "Own Studio")
    before = audit_count(db)
    client.login(insider.email, PASSWORD)
    review = client.get(f"/admin/reviews/{film.id}").get_data(as_text=True)
    assert "another admin must approve this film" in review and "Approve and open for funding" not in review
    response = client.post_form(
        f"/admin/reviews/{film.id}/approve", {"approve-csrf_token": client.csrf_token()}
    )
    assert response.status_code == 403
    assert "member of this film&#39;s studio" in response.get_data(as_text=True)
    db.reread()
    assert db.get(Film, film.id).state == FilmState.IN_REVIEW
    assert audit_count(db) == before

    outsider = make_user(db, roles=(Role.ADMIN,))
    client.post_form("/logout")
    client.login(outsider.email, PASSWORD)
    assert (
        client.post_form(
            f"/admin/reviews/{film.id}/approve", {"approve-csrf_token": client.csrf_token()}
        ).status_code
        == 303
    )
    db.reread()
    assert db.get(Film, film.id).state == FilmState.FUNDING


def test_the_person_who_starts_a_run_cannot_mark_it_paid(
    client: Client,
    other_client: Client,  # type: ignore[no-untyped-def]
    db: CheckSession,
    released,
    jobs,
) -> None:
    film, today = released["film"], released["now"].date()
    client.login(released["studio"].email, PASSWORD)
    file_report(client, film, "400.00", today, today + timedelta(days=6))
    db.reread()
    report = db.scalar(select(BoxOfficeReport))
    starter = released["finance"]
    other_client.login(starter.email, PASSWORD)
    other_client.post_form(
        f"/finance/reports/{report.id}/approve", {"approve-csrf_token": other_client.csrf_token()}
    )
    started = other_client.post_form(
        f"/finance/reports/{report.id}/run", {"run-csrf_token": other_client.csrf_token()}
    )
    run_url = started.headers["Location"]
    jobs.run()  # the workers write the statements
    before = audit_count(db)

    refused = other_client.post_form(f"{run_url}/paid", {"bank_reference": "BANK-1"})
    assert refused.status_code == 403
    assert "You started this payout run" in refused.get_data(as_text=True)
    db.reread()
    run = db.scalar(select(PayoutRun))
    assert run.status == "computed" and run.paid_by_id is None
    assert ledger.total_by_kind(db, film.id, "payout_paid", "paid_out") == 0
    assert audit_count(db) == before

    checker = make_user(db, roles=(Role.FINANCE,))
    client.post_form("/logout")
    client.login(checker.email, PASSWORD)
    assert client.post_form(f"{run_url}/paid", {"bank_reference": "BANK-1"}).status_code == 303
    db.reread()
    run = db.scalar(select(PayoutRun))
    assert run.status == "paid" and run.paid_by_id == checker.id

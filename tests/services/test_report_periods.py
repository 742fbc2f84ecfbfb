"""Box-office periods never overlap: receipts are counted once. A report whose
period overlaps a submitted or approved report of the same film is refused,
unless it is a correction of a named approved report (then it lies inside
that report's period and may overlap only that report and its other
corrections). Checked at filing and again at approval."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund.accounts.models import Role
from crowdfund.errors import Conflict, DomainError
from crowdfund.films.states import FilmState
from crowdfund.payouts import box_office
from crowdfund.payouts.models import BoxOfficeReport, ReportStatus
from crowdfund.site.web import app_services
from tests.conftest import POSTGRES, CheckSession
from tests.factories import make_film, make_studio_user, make_user

LATER = datetime.now(UTC) + timedelta(days=800)


@pytest.fixture
def world(db: CheckSession):  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.RELEASED)
    other_film = make_film(db, studio, FilmState.RELEASED)
    return {
        "studio": studio,
        "film": film,
        "other_film": other_film,
        "finance": make_user(db, roles=(Role.FINANCE,)),
    }


def file(
    db: CheckSession,
    world,
    start: date,
    end: date,
    cents: int = 10_000,
    *,
    film=None,  # type: ignore[no-untyped-def]
    corrects: int | None = None,
) -> BoxOfficeReport:
    report = box_office.file_report(
        db,
        film or world["film"],
        world["studio"],
        box_office.ReportInput(start, end, cents, "", corrects_report_id=corrects),
        now=LATER,
    )
    db.commit()
    return report


def count(db: CheckSession) -> int:
    db.reread()
    return db.scalar(select(func.count()).select_from(BoxOfficeReport))


JAN = (date(2027, 1, 1), date(2027, 1, 31))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        JAN,  # identical
        (date(2027, 1, 15), date(2027, 2, 15)),  # overlaps the end
        (date(2026, 12, 1), date(2027, 1, 1)),  # shares one day
        (date(2027, 1, 10), date(2027, 1, 12)),  # inside
        (date(2026, 12, 1), date(2027, 3, 1)),  # around
    ],
)
@pytest.mark.parametrize("first_status", ["submitted", "approved"])
def test_an_overlapping_report_is_refused(
    db: CheckSession,
    world,
    start: date,
    end: date,  # type: ignore[no-untyped-def]
    first_status: str,
) -> None:
    first = file(db, world, *JAN)
    if first_status == "approved":
        box_office.approve_report(db, first, world["finance"], now=LATER)
        db.commit()
    with pytest.raises(Conflict, match=rf"overlaps report #{first.id} \(2027-01-01 to 2027-01-31, "):
        file(db, world, start, end)
    db.rollback()
    assert count(db) == 1


def test_adjacent_periods_other_films_and_rejected_reports_do_not_block(db: CheckSession, world) -> None:  # type: ignore[no-untyped-def]
    first = file(db, world, *JAN)
    file(db, world, date(2027, 2, 1), date(2027, 2, 28))
    file(db, world, *JAN, film=world["other_film"])
    box_office.reject_report(db, first, world["finance"], "wrong numbers", now=LATER)
    db.commit()
    file(db, world, *JAN, cents=12_000)  # the refiled report replaces the rejected one
    assert count(db) == 4


def test_a_correction_names_an_approved_report_of_the_film_and_lies_inside_it(
    db: CheckSession, world
) -> None:  # type: ignore[no-untyped-def]
    original = file(db, world, *JAN)
    with pytest.raises(DomainError, match="approved"):
        file(db, world, *JAN, cents=-500, corrects=original.id)  # still waiting: reject or approve it first
    db.rollback()
    box_office.approve_report(db, original, world["finance"], now=LATER)
    db.commit()
    elsewhere = file(db, world, *JAN, film=world["other_film"])
    for corrects, period, message in [
        (elsewhere.id, JAN, "not a report of this film"),
        (999_999, JAN, "not a report of this film"),
        (original.id, (date(2027, 1, 20), date(2027, 2, 5)), "inside the period"),
    ]:
        with pytest.raises(DomainError, match=message):
            file(db, world, *period, cents=-500, corrects=corrects)
        db.rollback()
    correction = file(db, world, *JAN, cents=-500, corrects=original.id)
    second = file(db, world, date(2027, 1, 10), date(2027, 1, 12), cents=200, corrects=original.id)
    assert (correction.corrects_report_id, second.corrects_report_id) == (original.id, original.id)
    box_office.approve_report(db, correction, world["finance"], now=LATER)
    box_office.approve_report(db, second, world["finance"], now=LATER)
    db.commit()
    # A correction of a correction is a correction of the original.
    with pytest.raises(DomainError, match=f"report #{original.id}"):
        file(db, world, *JAN, cents=1, corrects=correction.id)
    db.rollback()
    # Without the mark, the same period is still refused.
    with pytest.raises(Conflict, match="overlaps"):
        file(db, world, *JAN, cents=-500)
    db.rollback()
    assert count(db) == 4


def test_two_pending_overlapping_reports_cannot_both_be_approved(db: CheckSession, world) -> None:  # type: ignore[no-untyped-def]
    # As a race or older data would leave them: two submitted reports of one period.
    now = LATER
    reports = [
        BoxOfficeReport(
            film_id=world["film"].id,
            period_start=JAN[0],
            period_end=JAN[1],
            net_receipts_cents=10_000,
            note="",
            status=ReportStatus.SUBMITTED.value,
            filed_by_id=world["studio"].id,
            filed_at=now,
        )
        for _ in range(2)
    ]
    db.add_all(reports)
    db.commit()
    box_office.approve_report(db, reports[0], world["finance"], now=now)
    db.commit()
    with pytest.raises(Conflict, match=f"overlaps report #{reports[0].id}"):
        box_office.approve_report(db, reports[1], world["finance"], now=now)
    db.rollback()
    db.reread()
    assert db.get(BoxOfficeReport, reports[1].id).status == ReportStatus.SUBMITTED
    # It can still be rejected.
    box_office.reject_report(
        db, db.get(BoxOfficeReport, reports[1].id), world["finance"], "duplicate", now=now
    )
    db.commit()


@pytest.mark.committing  # threads, each on a connection of its own
@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL row locks")
@pytest.mark.postgres_only
def test_concurrent_filings_of_one_period_let_one_in(app: Flask, db: CheckSession, world) -> None:  # type: ignore[no-untyped-def]
    sessionmaker = app_services(app).sessions
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        with sessionmaker() as session:
            film = session.get(type(world["film"]), world["film"].id)
            studio = session.get(type(world["studio"]), world["studio"].id)
            session.rollback()
            barrier.wait()
            try:
                box_office.file_report(
                    session,
                    film,
                    studio,
                    box_office.ReportInput(JAN[0] + timedelta(days=n), JAN[1], 1_000, ""),
                    now=LATER,
                )
                session.commit()
                result = "filed"
            except Conflict:
                session.rollback()
                result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["filed"] + ["refused"] * (threads_count - 1)
    assert count(db) == 1

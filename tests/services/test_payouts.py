"""Payout runs with hand-computed statements (see the comments for the arithmetic)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund import ledger
from crowdfund.accounts.models import Role
from crowdfund.errors import Conflict, DomainError, Forbidden
from crowdfund.films.models import Film
from crowdfund.films.services import change_film_state
from crowdfund.films.states import FilmState
from crowdfund.ledger import Account
from crowdfund.payouts import box_office, runs
from crowdfund.payouts.models import PayoutRun, PayoutStatement, RunStatus
from crowdfund.workflows import payout_run
from tests.conftest import CheckSession
from tests.factories import buy, make_film, make_studio_user, make_user

NOW = datetime.now(UTC)


@pytest.fixture
def world(db: CheckSession, app: Flask):  # type: ignore[no-untyped-def]
    """50% of receipts until 1.2x recouped, then 10%. A 3 stakes, B 2, C 1:
    K = $300, T = $360."""
    studio = make_studio_user(db)
    film = make_film(
        db,
        studio,
        FilmState.FUNDING,
        stake_cap=20,
        per_backer_limit=5,
        funding_goal_cents=20_000,
        recoup_share_bps=5000,
        recoup_multiple_bps=12000,
        profit_share_bps=1000,
    )
    backers = {name: make_user(db, f"{name.lower()}@example.com", name=name) for name in "ABC"}
    for name, units in (("A", 3), ("B", 2), ("C", 1)):
        buy(db, app, backers[name], film, units)
    film = db.get(Film, film.id)
    change_film_state(db, film, FilmState.FUNDED, now=NOW)
    change_film_state(db, film, FilmState.RELEASED, now=NOW)
    db.commit()
    finance = make_user(db, roles=(Role.FINANCE,))
    return {"film": film, "studio": studio, "finance": finance, "backers": backers}


def report(db: CheckSession, world, cents: int, month: int):  # type: ignore[no-untyped-def]
    data = box_office.ReportInput(date(2027, month, 1), date(2027, month, 28), cents, f"Month {month}")
    filed = box_office.file_report(db, world["film"], world["studio"], data, now=NOW + timedelta(days=400))
    db.commit()
    box_office.approve_report(db, filed, world["finance"], now=NOW + timedelta(minutes=month))
    db.commit()
    return filed


def amounts(db: CheckSession, run: PayoutRun) -> dict[str, tuple[int, int]]:
    rows = db.execute(select(PayoutStatement).where(PayoutStatement.run_id == run.id)).scalars()
    return {s.user.display_name: (s.amount_cents, s.cumulative_cents) for s in rows}


def test_two_periods_across_the_recoup_target_then_an_adjustment(db: CheckSession, world) -> None:  # type: ignore[no-untyped-def]
    finance = world["finance"]
    # Period 1: R = $400. Half is $200 < $360 target: pool $200.
    # Split 20000 over 3:2:1 = 10000, 6666.67, 3333.33 -> the spare cent to B.
    run1 = payout_run.run_payout(db, report(db, world, 40_000, 1), finance, now=NOW)
    assert (run1.tier1_cents, run1.tier2_cents, run1.pool_cents, run1.status) == (
        20_000,
        0,
        20_000,
        "computed",
    )
    assert amounts(db, run1) == {"A": (10_000, 10_000), "B": (6_667, 6_667), "C": (3_333, 3_333)}
    # Period 2: R = $500, P = $200, $160 left to the target. Half of R is $250 > $160,
    # so tier 1 pays $160 and uses $320 of R; 10% of the other $180 = $18. Pool $178.
    # Split 17800 over 3:2:1 = 8900, 5933.33, 2966.67 -> the spare cent to C.
    run2 = payout_run.run_payout(db, report(db, world, 50_000, 2), finance, now=NOW)
    assert (run2.already_paid_cents, run2.tier1_cents, run2.receipts_used_by_tier1_cents) == (
        20_000,
        16_000,
        32_000,
    )
    assert (run2.tier2_cents, run2.pool_cents) == (1_800, 17_800)
    assert amounts(db, run2) == {"A": (8_900, 18_900), "B": (5_933, 12_600), "C": (2_967, 6_300)}
    # An adjusting report of -$100 pays nothing and is carried ...
    run3 = payout_run.run_payout(db, report(db, world, -10_000, 3), finance, now=NOW)
    assert (run3.pool_cents, run3.carry_out_cents) == (0, -10_000)
    assert amounts(db, run3) == {"A": (0, 18_900), "B": (0, 12_600), "C": (0, 6_300)}
    # ... into the next: R = $300 - $100 = $200; recouped ($378 >= $360), so 10%: $20.
    run4 = payout_run.run_payout(db, report(db, world, 30_000, 4), finance, now=NOW)
    assert (run4.carried_in_cents, run4.receipts_cents, run4.tier1_cents, run4.pool_cents) == (
        -10_000,
        20_000,
        0,
        2_000,
    )
    assert amounts(db, run4) == {"A": (1_000, 19_900), "B": (667, 13_267), "C": (333, 6_633)}
    # The ledger owes backers every pool.
    assert -ledger.balance(db, Account.payouts_payable(world["film"].id)) == 20_000 + 17_800 + 2_000
    assert ledger.trial_balance(db) == 0


def test_running_twice_creates_nothing_new(db: CheckSession, world, mail) -> None:  # type: ignore[no-untyped-def]
    approved = report(db, world, 40_000, 1)
    run = payout_run.run_payout(db, approved, world["finance"], now=NOW)
    again = payout_run.run_payout(db, approved, world["finance"], now=NOW)
    assert again.id == run.id
    assert db.scalar(select(func.count()).select_from(PayoutStatement)) == 3
    assert db.scalar(select(func.count()).select_from(PayoutRun)) == 1
    assert ledger.balance(db, Account.payouts_payable(world["film"].id)) == -20_000
    assert len([m for m in mail.messages if "payout statement" in m["Subject"]]) == 3


def test_resumes_after_a_crash_midway(db: CheckSession, world) -> None:  # type: ignore[no-untyped-def]
    approved = report(db, world, 40_000, 1)
    run = runs.start_run(db, approved, world["finance"], now=NOW)
    db.commit()
    done = payout_run.write_statements(db, run, now=NOW, batch_size=1, max_batches=1)
    assert not done
    db.reread()
    assert db.scalar(select(func.count()).select_from(PayoutStatement)) == 1
    # "Crash": a new process picks the run up from its resume point.
    run = db.get(PayoutRun, run.id)
    assert payout_run.write_statements(db, run, now=NOW, batch_size=1)
    db.reread()
    run = db.get(PayoutRun, run.id)
    assert run.status == RunStatus.COMPUTED and run.statements_written == 3
    assert amounts(db, run) == {"A": (10_000, 10_000), "B": (6_667, 6_667), "C": (3_333, 3_333)}


def test_runs_follow_approval_order_and_reports_never_change(db: CheckSession, world) -> None:  # type: ignore[no-untyped-def]
    first = report(db, world, 40_000, 1)
    second = report(db, world, 10_000, 2)
    with pytest.raises(Conflict, match="earlier approved reports"):
        runs.start_run(db, second, world["finance"], now=NOW)
    db.rollback()
    with pytest.raises(Conflict, match="already been decided"):
        box_office.approve_report(db, first, world["finance"], now=NOW)
    with pytest.raises(Conflict):
        box_office.reject_report(db, first, world["finance"], "oops", now=NOW)


def test_filer_cannot_approve_and_bad_reports_are_refused(db: CheckSession, world) -> None:  # type: ignore[no-untyped-def]
    studio = world["studio"]
    # A studio member who is also finance staff still cannot approve their own report.
    from crowdfund.accounts.roles import grant_role

    grant_role(db, studio, "finance")
    data = box_office.ReportInput(date(2027, 1, 1), date(2027, 1, 31), 1000, "")
    filed = box_office.file_report(db, world["film"], studio, data, now=NOW + timedelta(days=400))
    with pytest.raises(Forbidden):
        box_office.approve_report(db, filed, studio, now=NOW)
    with pytest.raises(DomainError, match="ends before it starts"):
        box_office.file_report(
            db,
            world["film"],
            studio,
            box_office.ReportInput(date(2027, 2, 1), date(2027, 1, 1), 1, ""),
            now=NOW,
        )
    other_studio = make_studio_user(db, "Someone Else")
    with pytest.raises(DomainError):
        box_office.file_report(db, world["film"], other_studio, data, now=NOW + timedelta(days=400))


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (b"%PDF-1.7\n...", True),
        (b"period,receipts\n2026-01,1000\n", True),
        (b"\x89PNG\r\n\x1a\n\x00\x00", False),
        (b"<html><script>alert(1)</script></html>", False),
        (b"", False),
    ],
)
def test_supporting_files_checked_by_content(data: bytes, ok: bool) -> None:
    if ok:
        assert box_office.check_supporting_file(data, 1000) in ("application/pdf", "text/csv")
    else:
        with pytest.raises(DomainError):
            box_office.check_supporting_file(data, 1000)

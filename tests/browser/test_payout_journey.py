"""Box office to statement in a real browser: the studio files, finance
approves and runs the payout, downloads the CSV, and a backer reads the statement."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask

from crowdfund.accounts.models import Role
from crowdfund.films.models import Film
from crowdfund.films.services import change_film_state
from crowdfund.films.states import FilmState
from tests.browser.conftest import assert_accessible
from tests.browser.test_purchase import log_in
from tests.conftest import CheckSession
from tests.factories import buy, make_film, make_studio_user, make_user

pytestmark = pytest.mark.browser


def log_out(page) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("link", name="Log in").first.wait_for()


def test_box_office_to_statement(page, db: CheckSession, app: Flask, jobs) -> None:  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    film = make_film(
        db,
        studio,
        FilmState.FUNDING,
        title="Projector Nights",
        stake_cap=20,
        per_backer_limit=5,
        funding_goal_cents=10_000,
    )
    backer = make_user(db, "reader@example.com", name="Rae Reader")
    other = make_user(db, "other@example.com")
    buy(db, app, backer, film, 3)
    buy(db, app, other, film, 1)
    film = db.get(Film, film.id)
    now = datetime.now(UTC) - timedelta(days=30)
    change_film_state(db, film, FilmState.FUNDED, now=now)
    change_film_state(db, film, FilmState.RELEASED, now=now)
    db.commit()
    finance = make_user(db, "money@example.com", roles=(Role.FINANCE,))
    today = datetime.now(UTC).date()

    log_in(page, studio.email)
    page.goto(f"/studio/films/{film.id}")
    page.get_by_role("link", name="Box-office reports").click()
    page.get_by_label("Period start").fill((today - timedelta(days=7)).isoformat())
    page.get_by_label("Period end").fill(today.isoformat())
    page.get_by_label("Net box-office receipts ($)").fill("1,000.00")
    page.get_by_role("button", name="File report").click()
    page.get_by_text("Report filed.").wait_for()
    log_out(page)

    log_in(page, finance.email)
    page.goto("/finance/reports")
    page.get_by_role("link", name="Projector Nights").first.click()
    page.get_by_role("button", name="Approve report").click()
    page.get_by_text("Report approved.").wait_for()
    assert_accessible(page)
    page.get_by_role("button", name="Start payout run").click()
    page.get_by_text("The run started: workers write the 2 statements").wait_for()
    assert {outcome.result for outcome in jobs.run()} == {"done"}  # the workers' part
    page.reload()
    page.get_by_text("computed").first.wait_for()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    rows = list(csv.reader(io.StringIO(Path(download_info.value.path()).read_text(encoding="utf-8-sig"))))
    # R = $1,000; 50% until 1.2x of K = $200 is recouped: tier 1 pays $240 (uses $480), tier 2 10% of $520 = $52.
    assert rows[-1][0] == "TOTAL" and rows[-1][5] == "29200"
    amounts = {r[3]: r[5] for r in rows[1:-1]}
    assert amounts == {"reader@example.com": "21900", "other@example.com": "7300"}
    log_out(page)

    log_in(page, backer.email)
    page.get_by_role("link", name="Statements").click()
    page.get_by_role("link", name=re.compile(r"^F\d+-R1-\d{6}$")).click()
    page.get_by_role("heading", name="Payout statement").wait_for()
    text = page.content()
    assert "$219.00" in text and "3 of 4" in text and "Projector Nights" in text
    assert_accessible(page)

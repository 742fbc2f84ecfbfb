"""Box office through HTTP: filing, approval, runs, exports read back, statements."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta

import openpyxl
import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund import ledger
from crowdfund.accounts.models import Role
from crowdfund.films.models import Film
from crowdfund.films.services import change_film_state
from crowdfund.films.states import FilmState
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun, PayoutStatement
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, buy, make_film, make_studio_user, make_user


@pytest.fixture
def released(db: CheckSession, app: Flask, clock):  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    film = make_film(
        db,
        studio,
        FilmState.FUNDING,
        title="Quiet Machines",
        stake_cap=30,
        per_backer_limit=10,
        funding_goal_cents=20_000,
    )
    backers = [
        make_user(db, f"b{n}@example.com", name=name)
        for n, name in enumerate(["Ann", "=cmd|' /C calc'!A0", "Cy"])
    ]
    for backer, units in zip(backers, (3, 2, 1), strict=True):
        buy(db, app, backer, film, units)
    film = db.get(Film, film.id)
    now = datetime.now(UTC)
    change_film_state(db, film, FilmState.FUNDED, now=now)
    change_film_state(db, film, FilmState.RELEASED, now=now)
    db.commit()
    clock.set(now + timedelta(days=60))
    finance = make_user(db, "fin@example.com", roles=(Role.FINANCE,))
    return {"film": film, "studio": studio, "finance": finance, "backers": backers, "now": now}


def file_report(client: Client, film: Film, receipts: str, start: date, end: date):  # type: ignore[no-untyped-def]
    return client.post_form(
        f"/studio/films/{film.id}/reports",
        {
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "net_receipts": receipts,
            "note": "Weekend numbers",
            "file": (io.BytesIO(b"week,receipts\n1,400.00\n"), "numbers.csv"),
        },
        content_type="multipart/form-data",
    )


def test_file_approve_run_export_and_read_statements(
    client: Client, other_client: Client, db: CheckSession, released, mail, jobs
) -> None:  # type: ignore[no-untyped-def]
    film, today = released["film"], released["now"].date()
    client.login(released["studio"].email, PASSWORD)
    assert file_report(client, film, "400.00", today, today + timedelta(days=6)).status_code == 303
    report = db.scalar(select(BoxOfficeReport))
    assert report.net_receipts_cents == 40_000 and report.file_id

    other_client.login(released["finance"].email, PASSWORD)
    page = other_client.get(f"/finance/reports/{report.id}").get_data(as_text=True)
    assert "$400.00" in page and "Download the supporting file" in page
    download = other_client.get(f"/box-office/{report.id}/file")
    assert (
        download.headers["Content-Disposition"].startswith("attachment") and download.mimetype == "text/csv"
    )
    assert (
        other_client.post_form(
            f"/finance/reports/{report.id}/approve", {"approve-csrf_token": other_client.csrf_token()}
        ).status_code
        == 303
    )
    preview = other_client.get(f"/finance/reports/{report.id}").get_data(as_text=True)
    assert "Backers&#39; pool" in preview or "Backers' pool" in preview
    started = other_client.post_form(
        f"/finance/reports/{report.id}/run", {"run-csrf_token": other_client.csrf_token()}
    )
    assert started.status_code == 303
    run_url = started.headers["Location"]
    started_page = other_client.get(run_url).get_data(as_text=True)
    assert "The run started: workers write the" in started_page and "computing" in started_page
    # The request wrote no statement: the workers do, from the run's outbox row.
    assert db.scalar(select(func.count()).select_from(PayoutStatement)) == 0
    assert {o.kind for o in jobs.run()} == {"payouts.write", "payouts.announce"}
    run_page = other_client.get(run_url).get_data(as_text=True)
    assert "computed" in run_page and "$200.00" in run_page

    db.reread()
    run = db.scalar(select(PayoutRun))
    statements = {s.number: s for s in db.scalars(select(PayoutStatement))}
    assert sum(s.amount_cents for s in statements.values()) == run.pool_cents == 20_000

    # CSV read back and matched to the database to the cent.
    body = other_client.get(f"{run_url}/statements.csv").get_data()
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == [
        "statement_number",
        "backer_id",
        "name",
        "email",
        "stakes",
        "amount_cents",
        "amount",
        "payment_status",
    ]
    for number, backer_id, name, _email, stakes, cents, text, _status in rows[1:-1]:
        statement = statements[number]
        assert (int(backer_id), int(stakes), int(cents)) == (
            statement.user_id,
            statement.stakes,
            statement.amount_cents,
        )
        assert text == f"${statement.amount_cents // 100:,}.{statement.amount_cents % 100:02d}"
        assert not name.startswith("=")  # formula neutralised
    assert rows[-1][0] == "TOTAL" and int(rows[-1][5]) == run.pool_cents and int(rows[-1][4]) == 6

    # XLSX read back with openpyxl.
    xlsx = other_client.get(f"{run_url}/statements.xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx.get_data()), read_only=True).active
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][0] == "statement_number"
    assert {v[0]: v[5] for v in values[1:-1]} == {n: s.amount_cents for n, s in statements.items()}
    assert values[-1][0] == "TOTAL" and values[-1][5] == 20_000

    # Each backer reads their own statement (web and PDF), nobody else's.
    mine = statements[next(n for n, s in statements.items() if s.user_id == released["backers"][0].id)]
    theirs = next(s for s in statements.values() if s.user_id != released["backers"][0].id)
    client.post_form("/logout")
    client.login(released["backers"][0].email, PASSWORD)
    page = client.get(f"/statements/{mine.id}").get_data(as_text=True)
    assert mine.number in page and "$100.00" in page and "3 of 6" in page
    pdf = client.get(f"/statements/{mine.id}.pdf")
    assert pdf.mimetype == "application/pdf" and pdf.get_data().startswith(b"%PDF")
    assert client.get(f"/statements/{theirs.id}").status_code == 404
    assert client.get(f"/statements/{theirs.id}.pdf").status_code == 404
    assert mine.number in client.get("/statements").get_data(as_text=True)
    assert any(mine.number in m["Subject"] for m in mail.to(released["backers"][0].email))

    # Another finance user (not the one who started the run) marks it paid; the ledger records it once.
    other_client.post_form("/logout")
    other_client.login(make_user(db, roles=(Role.FINANCE,)).email, PASSWORD)
    assert other_client.post_form(f"{run_url}/paid", {"bank_reference": "BANK-42"}).status_code == 303
    other_client.post_form(f"{run_url}/paid", {"bank_reference": "BANK-42"})
    db.reread()
    assert ledger.total_by_kind(db, film.id, "payout_paid", "paid_out") == -20_000
    assert ledger.trial_balance(db) == 0
    recon = other_client.get("/finance/reconciliation").get_data(as_text=True)
    assert "The ledger is balanced" in recon and "Quiet Machines" in recon

    ledger_csv = other_client.get(
        f"/finance/ledger?start={today - timedelta(days=1)}&end={today + timedelta(days=90)}"
    )
    ledger_rows = list(csv.reader(io.StringIO(ledger_csv.get_data().decode("utf-8-sig"))))
    assert sum(int(r[8]) for r in ledger_rows[1:]) == 0
    assert {r[2] for r in ledger_rows[1:]} >= {"payment", "payout_pool", "payout_paid"}


def test_bad_reports_come_back_with_messages(client: Client, db: CheckSession, released) -> None:  # type: ignore[no-untyped-def]
    film, today = released["film"], released["now"].date()
    client.login(released["studio"].email, PASSWORD)
    cases = [
        (dict(net_receipts="lots"), "Enter an amount"),
        (dict(period_end="2020-01-01"), "ends before"),
        (dict(net_receipts="9" * 19), "Enter an amount"),
        (dict(file=(io.BytesIO(b"<html><script>x</script>"), "report.csv")), "PDF or a CSV"),
        (dict(file=(io.BytesIO(b"\x89PNG\r\n\x1a\n\x00"), "report.pdf")), "PDF or a CSV"),
    ]
    for overrides, message in cases:
        data = {
            "period_start": today.isoformat(),
            "period_end": today.isoformat(),
            "net_receipts": "1.00",
            "note": "",
        }
        data.update(overrides)
        response = client.post_form(
            f"/studio/films/{film.id}/reports", data, content_type="multipart/form-data"
        )
        assert response.status_code == 400, overrides
        assert message in response.get_data(as_text=True), overrides
    assert db.scalar(select(func.count()).select_from(BoxOfficeReport)) == 0


def test_adjusting_report_through_http(
    client: Client, other_client: Client, db: CheckSession, released, jobs
) -> None:  # type: ignore[no-untyped-def]
    film, today = released["film"], released["now"].date()
    client.login(released["studio"].email, PASSWORD)
    file_report(client, film, "-150.00", today, today)
    db.reread()
    report = db.scalar(select(BoxOfficeReport))
    assert report.net_receipts_cents == -15_000
    other_client.login(released["finance"].email, PASSWORD)
    other_client.post_form(
        f"/finance/reports/{report.id}/approve", {"approve-csrf_token": other_client.csrf_token()}
    )
    started = other_client.post_form(
        f"/finance/reports/{report.id}/run", {"run-csrf_token": other_client.csrf_token()}
    )
    jobs.run()
    page = other_client.get(started.headers["Location"]).get_data(as_text=True)
    assert "Carried to the next report" in page and "-$150.00" in page
    db.reread()
    assert db.scalar(select(func.sum(PayoutStatement.amount_cents))) == 0


def test_return_calculator_on_the_film_page(client: Client, released) -> None:  # type: ignore[no-untyped-def]
    film = released["film"]
    page = client.get(f"/films/{film.slug}?receipts=400&stakes=2#calculator").get_data(as_text=True)
    # K = $300 over 6 stakes; R = $400 -> pool $200; 2 stakes -> $66.67.
    assert re.search(r"earns <strong>\$400.00</strong>.*?gets <strong>\$66.67</strong>", page, re.S)
    assert "<svg" in page
    bad = client.get(f"/films/{film.slug}?receipts=abc&stakes=2")
    assert bad.status_code == 200 and "Enter receipts in dollars" in bad.get_data(as_text=True)
    assert client.get(f"/films/{film.slug}?stakes=-4").status_code == 400


def test_studio_closes_a_released_film_after_its_final_report(
    client: Client, other_client: Client, db: CheckSession, released
) -> None:  # type: ignore[no-untyped-def]
    """FilmState.CLOSED is reached by a real action (issue 13, point 2): the
    studio closes the released film from its page (a POST with CSRF); the film
    then accepts no more box-office reports. Only the film's studio may close
    it, and only once it is released."""
    film, today = released["film"], released["now"].date()
    client.login(released["studio"].email, PASSWORD)
    assert file_report(client, film, "400.00", today, today + timedelta(days=6)).status_code == 303
    page = client.get(f"/studio/films/{film.id}").get_data(as_text=True)
    assert f'action="/studio/films/{film.id}/close"' in page
    assert client.post(f"/studio/films/{film.id}/close").status_code == 400  # no CSRF token
    other_client.login(make_studio_user(db, "Other Studio").email, PASSWORD)
    assert other_client.post_form(f"/studio/films/{film.id}/close").status_code == 404
    db.reread()
    assert db.get(Film, film.id).state == FilmState.RELEASED

    closed = client.post_form(f"/studio/films/{film.id}/close", follow_redirects=True)
    assert closed.status_code == 200
    assert "The film is closed: it accepts no more box-office reports." in closed.get_data(as_text=True)
    db.reread()
    assert db.get(Film, film.id).state == FilmState.CLOSED
    assert f'action="/studio/films/{film.id}/close"' not in client.get(f"/studio/films/{film.id}").get_data(
        as_text=True
    )

    refused = file_report(client, film, "100.00", today + timedelta(days=7), today + timedelta(days=13))
    assert refused.status_code == 400
    assert "This film is closed: it accepts no more box-office reports." in refused.get_data(as_text=True)
    db.reread()
    assert db.scalar(select(func.count()).select_from(BoxOfficeReport)) == 1
    again = client.post_form(f"/studio/films/{film.id}/close", follow_redirects=True)
    assert "Only released films can be closed." in again.get_data(as_text=True)

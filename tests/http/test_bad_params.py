"""Integer and date values in query strings and forms: anything but ASCII
digits, or a date out of range, is a 400 with a message on the app's error
page, never a 500 (crowdfund/params.py)."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund.accounts.models import Role
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order
from crowdfund.outbox.tasks import OutboxTask
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun
from tests.conftest import POSTGRES, CheckSession, Client
from tests.factories import PASSWORD, make_film, make_studio_user, make_user
from tests.http.test_payouts_http import file_report, released  # noqa: F401

NON_ASCII_NUMBERS = ["²", "١٢", "１", "߁", "1²", "𝟙"]


def assert_bad_request(response, name: str) -> None:  # type: ignore[no-untyped-def]
    body = response.get_data(as_text=True)
    assert response.status_code == 400, (name, response.status_code, body[-300:])
    assert "is not valid" in body and name in body, body[-500:]
    assert body.rstrip().endswith("</html>")  # the app's whole error page, not a bare one


@pytest.mark.parametrize("value", NON_ASCII_NUMBERS)
def test_non_ascii_page_numbers_are_400_on_catalogue_and_audit(
    client: Client, db: CheckSession, value: str
) -> None:
    make_film(db, make_studio_user(db), FilmState.FUNDING)
    for path, args in (("/", {}), ("/films", {}), ("/films", {"section": "funded"})):
        assert_bad_request(client.get(path, query_string={**args, "page": value}), "page")
    client.login(make_user(db, roles=(Role.ADMIN,)).email, PASSWORD)
    assert_bad_request(client.get("/admin/audit", query_string={"page": value}), "page")


@pytest.mark.parametrize("value", NON_ASCII_NUMBERS + ["-4", "0", "999999"])
def test_bad_stakes_on_the_return_calculator_are_400(client: Client, released, value: str) -> None:  # type: ignore[no-untyped-def]
    film = released["film"]
    assert_bad_request(client.get(f"/films/{film.slug}", query_string={"stakes": value}), "stakes")
    assert client.get(f"/films/{film.slug}", query_string={"stakes": "2"}).status_code == 200


@pytest.mark.parametrize("value", ["9999-12-31", "0001-01-01", "２０２６-01-01", "2026-02-30", "20260101"])
def test_out_of_range_dates_on_ledger_and_audit_are_400(client: Client, db: CheckSession, value: str) -> None:
    client.login(make_user(db, roles=(Role.FINANCE, Role.ADMIN)).email, PASSWORD)
    ledger = client.get("/finance/ledger", query_string={"start": "2026-01-01", "end": value})
    body = ledger.get_data(as_text=True)
    assert ledger.status_code == 400 and "Enter a" in body and "date" in body, body[-400:]
    assert body.rstrip().endswith("</html>")
    for name in ("until", "since"):
        assert_bad_request(client.get("/admin/audit", query_string={name: value}), name)


def test_far_but_sane_dates_still_work(client: Client, db: CheckSession) -> None:
    client.login(make_user(db, roles=(Role.FINANCE, Role.ADMIN)).email, PASSWORD)
    ledger = client.get("/finance/ledger", query_string={"start": "2000-01-01", "end": "2100-12-31"})
    assert ledger.status_code == 200 and ledger.mimetype == "text/csv"
    assert (
        client.get("/admin/audit", query_string={"since": "2000-01-01", "until": "2100-12-31"}).status_code
        == 200
    )


@pytest.mark.parametrize("value", NON_ASCII_NUMBERS)
def test_non_ascii_units_on_the_hold_form_get_a_message(client: Client, db: CheckSession, value: str) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, stake_cap=20, per_backer_limit=5)
    client.login(make_user(db).email, PASSWORD)
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    key = re.search(r'name="key" value="([^"]+)"', page).group(1)
    response = client.post_form(
        f"/films/{film.slug}/hold", {"units": value, "key": key}, follow_redirects=True
    )
    assert response.status_code == 200 and "Choose how many stakes" in response.get_data(as_text=True)
    db.reread()
    assert db.scalar(select(func.count()).select_from(Order)) == 0


@pytest.mark.committing  # threads, each on a connection of its own
@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL row locks")
@pytest.mark.postgres_only
def test_ten_parallel_run_starts_make_one_run(
    app: Flask, client: Client, db: CheckSession, released, jobs
) -> None:  # type: ignore[no-untyped-def]
    film, today = released["film"], released["now"].date()
    client.login(released["studio"].email, PASSWORD)
    assert file_report(client, film, "400.00", today, today + timedelta(days=6)).status_code == 303
    db.reread()
    report = db.scalar(select(BoxOfficeReport))
    approver = make_user(db, roles=(Role.FINANCE,))
    app.test_client_class = Client
    finance_client = app.test_client()
    finance_client.login(approver.email, PASSWORD)
    assert (
        finance_client.post_form(
            f"/finance/reports/{report.id}/approve", {"approve-csrf_token": finance_client.csrf_token()}
        ).status_code
        == 303
    )

    clients = []
    for _ in range(10):
        c = app.test_client()
        c.login(released["finance"].email, PASSWORD)
        clients.append((c, c.csrf_token()))
    barrier = threading.Barrier(len(clients))
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def start(c: Client, token: str) -> None:
        barrier.wait()
        response = c.post(f"/finance/reports/{report.id}/run", data={"run-csrf_token": token})
        with lock:
            results.append((response.status_code, response.headers.get("Location", "")))

    threads = [threading.Thread(target=start, args=pair) for pair in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    db.reread()
    runs = list(db.scalars(select(PayoutRun)))
    assert len(runs) == 1
    assert results == [(303, f"/finance/runs/{runs[0].id}")] * 10, results
    # One run, and one outbox row for its statements: the workers write them once.
    assert (
        db.scalar(select(func.count()).select_from(OutboxTask).where(OutboxTask.kind == "payouts.write")) == 1
    )
    jobs.run()
    db.reread()
    assert runs[0].status == "computed" and runs[0].statements_written == 3

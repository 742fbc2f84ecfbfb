"""A statement says whether its money was paid: "computed (not yet paid)"
until finance marks the run paid, then "paid on <date>", on the web page, the
PDF (same template), the e-mail, the list and the exports; totals count only
what was paid."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import openpyxl
from flask import Flask, template_rendered
from sqlalchemy import select

from crowdfund.accounts.models import Role, User
from crowdfund.payouts import box_office, runs
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun, PayoutStatement
from crowdfund.workflows import payout_run
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_user
from tests.http.test_payouts_http import released  # noqa: F401

COMPUTED = "computed (not yet paid)"


def run_for(db: CheckSession, released, cents: int, days: int) -> PayoutRun:  # type: ignore[no-untyped-def]
    start = released["now"].date() + timedelta(days=days)
    report = box_office.file_report(
        db,
        released["film"],
        released["studio"],
        box_office.ReportInput(start, start + timedelta(days=6), cents, ""),
        now=released["now"] + timedelta(days=days + 30),
    )
    db.commit()
    box_office.approve_report(db, report, released["finance"], now=datetime.now(UTC))
    db.commit()
    return payout_run.run_payout(
        db, db.get(BoxOfficeReport, report.id), released["finance"], now=datetime.now(UTC)
    )


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def pdf_html(app: Flask, client: Client, url: str) -> str:
    """The HTML WeasyPrint turned into the PDF."""
    rendered: list[str] = []

    def keep(sender, template, context, **extra):  # type: ignore[no-untyped-def]
        if template.name == "payouts/statement_pdf.html":
            rendered.append(template.render(context))

    with template_rendered.connected_to(keep, app):
        response = client.get(url)
    assert response.status_code == 200 and response.get_data().startswith(b"%PDF")
    return text_of(rendered[0])


def test_a_computed_statement_says_not_yet_paid_and_counts_nothing_paid(
    app: Flask,
    client: Client,
    db: CheckSession,  # type: ignore[no-untyped-def]
    other_client: Client,
    released,
    mail,
) -> None:
    ann = released["backers"][0]  # 3 of 6 stakes
    run = run_for(db, released, 40_000, 0)  # pool $200: Ann $100
    mine = db.scalar(select(PayoutStatement).where(PayoutStatement.user_id == ann.id))
    client.login(ann.email, PASSWORD)

    page = text_of(client.get(f"/statements/{mine.id}").get_data(as_text=True))
    assert f"Status {COMPUTED}" in page and "$100.00" in page
    assert "Paid to you for this film so far $0.00" in page
    assert f"Status {COMPUTED}" in pdf_html(app, client, f"/statements/{mine.id}.pdf")
    listing = text_of(client.get("/statements").get_data(as_text=True))
    assert f"{mine.number} Quiet Machines" in listing and f"$100.00 {COMPUTED} $0.00" in listing
    body = next(m for m in mail.to(ann.email) if mine.number in m["Subject"]).get_content()
    assert COMPUTED in body and "Paid to you" not in body

    other_client.login(released["finance"].email, PASSWORD)
    rows = list(
        csv.reader(
            io.StringIO(
                other_client.get(f"/finance/runs/{run.id}/statements.csv").get_data().decode("utf-8-sig")
            )
        )
    )
    assert rows[0][-1] == "payment_status" and {r[-1] for r in rows[1:]} == {COMPUTED}
    sheet = openpyxl.load_workbook(
        io.BytesIO(other_client.get(f"/finance/runs/{run.id}/statements.xlsx").get_data()), read_only=True
    ).active
    assert {r[-1] for r in list(sheet.iter_rows(values_only=True))[1:]} == {COMPUTED}

    # Another finance user confirms the transfer: now it says paid, and counts.
    checker = make_user(db, roles=(Role.FINANCE,))
    other_client.post_form("/logout")
    other_client.login(checker.email, PASSWORD)
    assert (
        other_client.post_form(f"/finance/runs/{run.id}/paid", {"bank_reference": "BANK-7"}).status_code
        == 303
    )
    db.reread()
    paid_on = f"paid on {db.get(PayoutRun, run.id).paid_at.date().isoformat()}"
    page = text_of(client.get(f"/statements/{mine.id}").get_data(as_text=True))
    assert f"Status {paid_on}" in page and COMPUTED not in page
    assert "Paid to you for this film so far $100.00" in page
    assert f"Status {paid_on}" in pdf_html(app, client, f"/statements/{mine.id}.pdf")
    listing = text_of(client.get("/statements").get_data(as_text=True))
    assert f"$100.00 {paid_on} $100.00" in listing
    rows = list(
        csv.reader(
            io.StringIO(
                other_client.get(f"/finance/runs/{run.id}/statements.csv").get_data().decode("utf-8-sig")
            )
        )
    )
    assert {r[-1] for r in rows[1:]} == {paid_on}


def test_totals_count_only_paid_runs(client: Client, db: CheckSession, released) -> None:  # type: ignore[no-untyped-def]
    ann = released["backers"][0]
    first = run_for(db, released, 40_000, 0)  # Ann $100
    checker = make_user(db, roles=(Role.FINANCE,))
    runs.mark_paid(db, db.get(PayoutRun, first.id), db.get(User, checker.id), "BANK-1", now=datetime.now(UTC))
    db.commit()
    second = run_for(db, released, 10_000, 7)  # pool $50: Ann $25, computed only
    later = db.scalar(
        select(PayoutStatement).where(PayoutStatement.user_id == ann.id, PayoutStatement.run_id == second.id)
    )
    assert later.amount_cents == 2_500
    client.login(ann.email, PASSWORD)
    page = text_of(client.get(f"/statements/{later.id}").get_data(as_text=True))
    assert f"Status {COMPUTED}" in page and "Paid to you for this film so far $100.00" in page
    listing = text_of(client.get("/statements").get_data(as_text=True))
    assert f"$25.00 {COMPUTED} $100.00" in listing

"""Overlapping box-office periods through the studio's form and finance's
approval: a form error (400) or a 409 with the reason, nothing written."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from crowdfund.payouts.models import BoxOfficeReport, ReportStatus
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD
from tests.http.test_payouts_http import released  # noqa: F401


def post_report(client: Client, film, start, end, receipts: str = "100.00", corrects: str = ""):  # type: ignore[no-untyped-def]
    return client.post_form(
        f"/studio/films/{film.id}/reports",
        {
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "net_receipts": receipts,
            "corrects_report": corrects,
            "note": "kept note",
            "file": (io.BytesIO(b""), ""),
        },
        content_type="multipart/form-data",
    )


def count(db: CheckSession) -> int:
    db.reread()
    return db.scalar(select(func.count()).select_from(BoxOfficeReport))


def test_the_studio_form_refuses_an_overlap_and_takes_a_correction(
    client: Client,
    other_client: Client,  # type: ignore[no-untyped-def]
    db: CheckSession,
    released,
) -> None:
    film, today = released["film"], released["now"].date()
    week = (today, today + timedelta(days=6))
    client.login(released["studio"].email, PASSWORD)
    assert post_report(client, film, *week).status_code == 303
    db.reread()
    first = db.scalar(select(BoxOfficeReport))

    again = post_report(client, film, today + timedelta(days=3), today + timedelta(days=9), "250.00")
    page = again.get_data(as_text=True)
    assert again.status_code == 400
    assert (
        f"This period overlaps report #{first.id}" in page
        and "kept note" in page
        and 'value="250.00"' in page
    )
    assert count(db) == 1
    # A correction of a report still waiting is refused: finance rejects it instead.
    waiting = post_report(client, film, *week, "-20.00", corrects=str(first.id))
    assert waiting.status_code == 400 and "is not approved" in waiting.get_data(as_text=True)
    bad_number = post_report(client, film, *week, "-20.00", corrects="²")
    assert bad_number.status_code == 400 and "Enter the number of the report" in bad_number.get_data(
        as_text=True
    )
    assert count(db) == 1

    other_client.login(released["finance"].email, PASSWORD)
    other_client.post_form(
        f"/finance/reports/{first.id}/approve", {"approve-csrf_token": other_client.csrf_token()}
    )
    assert post_report(client, film, *week, "-20.00", corrects=f"#{first.id}").status_code == 303
    listing = client.get(f"/studio/films/{film.id}/reports").get_data(as_text=True)
    assert f"(corrects #{first.id})" in listing
    db.reread()
    correction = db.scalar(select(BoxOfficeReport).where(BoxOfficeReport.id != first.id))
    assert (correction.corrects_report_id, correction.net_receipts_cents) == (first.id, -2_000)


def test_finance_cannot_approve_a_second_report_of_the_same_period(
    other_client: Client,
    db: CheckSession,  # type: ignore[no-untyped-def]
    released,
) -> None:
    film, today = released["film"], released["now"].date()
    # Two submitted reports of one week, as a race or older data left them.
    reports = [
        BoxOfficeReport(
            film_id=film.id,
            period_start=today,
            period_end=today + timedelta(days=6),
            net_receipts_cents=40_000,
            note="",
            status=ReportStatus.SUBMITTED.value,
            filed_by_id=released["studio"].id,
            filed_at=datetime.now(UTC),
        )
        for _ in range(2)
    ]
    db.add_all(reports)
    db.commit()
    other_client.login(released["finance"].email, PASSWORD)
    token = other_client.csrf_token()
    assert (
        other_client.post_form(
            f"/finance/reports/{reports[0].id}/approve", {"approve-csrf_token": token}
        ).status_code
        == 303
    )
    second = other_client.post_form(
        f"/finance/reports/{reports[1].id}/approve", {"approve-csrf_token": token}
    )
    assert second.status_code == 409
    assert f"overlaps report #{reports[0].id}" in second.get_data(as_text=True)
    db.reread()
    assert db.get(BoxOfficeReport, reports[1].id).status == ReportStatus.SUBMITTED

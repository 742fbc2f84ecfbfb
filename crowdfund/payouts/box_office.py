"""Box-office reports: a studio files a period's net receipts, finance approves
or rejects it (separation of duty), corrections of approved reports, and the
supporting file.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from crowdfund import transitions
from crowdfund.accounts.models import User
from crowdfund.errors import Conflict, DomainError, Forbidden, NotFound
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.payouts.models import BoxOfficeReport, ReportStatus
from crowdfund.payouts.states import REPORT_TRANSITIONS
from crowdfund.uploads import StoredFile, store_file

MAX_RECEIPTS_CENTS = 10**14  # a trillion dollars: anything above is a typing error


SUPPORTING_FILE_TYPES = {"application/pdf", "text/csv"}


@dataclass(frozen=True)
class ReportInput:
    period_start: date
    period_end: date
    net_receipts_cents: int
    note: str
    #: Set for a correction: the id of the approved report it corrects.
    corrects_report_id: int | None = None


def check_supporting_file(data: bytes, max_bytes: int) -> str:
    """PDF or CSV, by content. Returns the content type it will be served with."""
    if len(data) > max_bytes:
        raise DomainError(f"The file is too large: at most {max_bytes // (1024 * 1024)} MB.", field="file")
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DomainError("Attach a PDF or a CSV file (UTF-8 text).", field="file") from exc
    if "\x00" in text or not text.strip():
        raise DomainError("Attach a PDF or a CSV file (UTF-8 text).", field="file")
    try:
        rows = list(csv.reader(io.StringIO(text[:100_000])))
    except csv.Error as exc:
        raise DomainError("The CSV file could not be read.", field="file") from exc
    if not rows or "<" in text[:200].lstrip()[:1]:
        raise DomainError("Attach a PDF or a CSV file.", field="file")
    return "text/csv"


def file_report(
    session: Session,
    film: Film,
    user: User,
    data: ReportInput,
    *,
    now: datetime,
    attachment: bytes | None = None,
    max_bytes: int = 5 * 1024 * 1024,
) -> BoxOfficeReport:
    if user.studio_id != film.studio_id:
        raise NotFound("No such film.")
    if film.state == FilmState.CLOSED:
        raise Conflict("This film is closed: it accepts no more box-office reports.")
    if film.state != FilmState.RELEASED:
        raise Conflict("Box-office reports are filed once the film is marked released.")
    if data.period_end < data.period_start:
        raise DomainError("The period ends before it starts.", field="period_end")
    if film.released_at and data.period_end < film.released_at.date():
        raise DomainError("The period ends before the film was released.", field="period_end")
    if data.period_start > now.date():
        raise DomainError("The period has not started yet.", field="period_start")
    if abs(data.net_receipts_cents) > MAX_RECEIPTS_CENTS:
        raise DomainError("That amount is not plausible.", field="net_receipts")
    _lock_film_reports(session, film.id)
    if data.corrects_report_id is not None:
        _check_correction(session, film.id, data)
    _refuse_overlap(
        session,
        film.id,
        data.period_start,
        data.period_end,
        corrects=data.corrects_report_id,
        statuses=(ReportStatus.SUBMITTED, ReportStatus.APPROVED),
    )
    report = BoxOfficeReport(
        film_id=film.id,
        period_start=data.period_start,
        period_end=data.period_end,
        net_receipts_cents=data.net_receipts_cents,
        note=data.note.strip()[:5000],
        status=ReportStatus.SUBMITTED.value,
        filed_by_id=user.id,
        filed_at=now,
        corrects_report_id=data.corrects_report_id,
    )
    if attachment:
        report.file_id = store_file(session, attachment, check_supporting_file(attachment, max_bytes)).id
    session.add(report)
    session.flush()
    return report


def _lock_film_reports(session: Session, film_id: int) -> None:
    """Filings and approvals of one film's reports take turns on the film's row
    (PostgreSQL; SQLite serialises writers), so two overlapping reports cannot
    both pass the overlap check."""
    session.execute(select(Film.id).where(Film.id == film_id).with_for_update())


def _check_correction(session: Session, film_id: int, data: ReportInput) -> None:
    """A correction names an approved original report of the same film and lies inside its period."""
    original = session.get(BoxOfficeReport, data.corrects_report_id)
    if original is None or original.film_id != film_id:
        raise DomainError(
            f"Report #{data.corrects_report_id} is not a report of this film.", field="corrects_report"
        )
    if original.corrects_report_id is not None:
        raise DomainError(
            f"Report #{original.id} is itself a correction: name the report it corrects, "
            f"report #{original.corrects_report_id}.",
            field="corrects_report",
        )
    if original.status != ReportStatus.APPROVED:
        raise DomainError(
            f"Report #{original.id} is not approved: only an approved report is corrected "
            "(a report still waiting can be rejected and filed again).",
            field="corrects_report",
        )
    if data.period_start < original.period_start or data.period_end > original.period_end:
        raise DomainError(
            f"A correction lies inside the period of the report it corrects: "
            f"{original.period_start} to {original.period_end}.",
            field="period_start",
        )


def _refuse_overlap(
    session: Session,
    film_id: int,
    start: date,
    end: date,
    *,
    corrects: int | None,
    statuses: tuple[ReportStatus, ...],
    exclude_id: int | None = None,
) -> None:
    """Receipts are counted once: no two reports of a film share a day, except a
    correction with the report it corrects and that report's other corrections."""
    statement = select(BoxOfficeReport).where(
        BoxOfficeReport.film_id == film_id,
        BoxOfficeReport.status.in_([s.value for s in statuses]),
        BoxOfficeReport.period_start <= end,
        BoxOfficeReport.period_end >= start,
    )
    if exclude_id is not None:
        statement = statement.where(BoxOfficeReport.id != exclude_id)
    if corrects is not None:
        statement = statement.where(
            BoxOfficeReport.id != corrects,
            or_(BoxOfficeReport.corrects_report_id.is_(None), BoxOfficeReport.corrects_report_id != corrects),
        )
    other = session.scalar(statement.order_by(BoxOfficeReport.period_start, BoxOfficeReport.id).limit(1))
    if other is not None:
        state = "approved" if other.status == ReportStatus.APPROVED else "waiting for finance"
        raise Conflict(
            f"This period overlaps report #{other.id} ({other.period_start} to {other.period_end}, {state}): "
            "its receipts would be counted twice. Choose a period that does not overlap, or file a correction "
            "of that report (fill in “Corrects report #”).",
            field="period_start",
        )


REPORT = transitions.Machine(
    name="box-office report",
    model=BoxOfficeReport,
    column="status",
    transitions=REPORT_TRANSITIONS,
    audit_actions={ReportStatus.APPROVED: "box_office.approve", ReportStatus.REJECTED: "box_office.reject"},
    audit_object_type="box_office_report",
)


def _move_report(
    session: Session,
    report: BoxOfficeReport,
    target: ReportStatus,
    *,
    finance: User,
    now: datetime,
    reason: str | None = None,
) -> None:
    """The one way a report changes state: only a submitted report is decided, once."""
    if report.status != ReportStatus.SUBMITTED:
        raise Conflict("This report has already been decided; approved reports never change.")
    values: dict[str, object] = {"decided_by_id": finance.id, "decided_at": now}
    if reason is not None:
        values["rejection_reason"] = reason
    if not transitions.move(
        session,
        REPORT,
        report,
        target,
        now=now,
        actor=finance.id,
        reason=reason,
        values=values,
        audit_after={"net_receipts_cents": report.net_receipts_cents},
    ):
        raise Conflict("This report has already been decided.")


def _refuse_own_studio(report: BoxOfficeReport, finance: User) -> None:
    """Separation of duty: nobody decides on the receipts of their own studio."""
    if finance.studio_id is not None and finance.studio_id == report.film.studio_id:
        raise Forbidden(
            "You are a member of this film's studio, so you cannot decide on its box-office reports: "
            "another finance user must."
        )


def approve_report(session: Session, report: BoxOfficeReport, finance: User, *, now: datetime) -> None:
    if report.filed_by_id == finance.id:
        raise Forbidden("The person who filed a report cannot approve it.")
    _refuse_own_studio(report, finance)
    # Checked again here: reports filed before this rule, or in a race, may overlap.
    _lock_film_reports(session, report.film_id)
    _refuse_overlap(
        session,
        report.film_id,
        report.period_start,
        report.period_end,
        corrects=report.corrects_report_id,
        statuses=(ReportStatus.APPROVED,),
        exclude_id=report.id,
    )
    _move_report(session, report, ReportStatus.APPROVED, finance=finance, now=now)


def reject_report(
    session: Session, report: BoxOfficeReport, finance: User, reason: str, *, now: datetime
) -> None:
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("Say why the report is rejected.", field="reason")
    if report.filed_by_id == finance.id:
        raise Forbidden("The person who filed a report cannot decide on it.")
    _refuse_own_studio(report, finance)
    _move_report(session, report, ReportStatus.REJECTED, finance=finance, now=now, reason=reason[:5000])


def film_reports(session: Session, film_id: int) -> list[BoxOfficeReport]:
    return list(
        session.scalars(
            select(BoxOfficeReport)
            .where(BoxOfficeReport.film_id == film_id)
            .order_by(BoxOfficeReport.filed_at, BoxOfficeReport.id)
        )
    )


def reports_waiting(session: Session) -> list[BoxOfficeReport]:
    return list(
        session.scalars(
            select(BoxOfficeReport)
            .where(BoxOfficeReport.status == ReportStatus.SUBMITTED)
            .order_by(BoxOfficeReport.filed_at)
        )
    )


def supporting_file(session: Session, report: BoxOfficeReport) -> StoredFile | None:
    return session.get(StoredFile, report.file_id) if report.file_id else None

"""Box-office reports, payout runs and statements.

A run is computed in two steps so that a million stakes never sit in memory
and a crash loses at most one batch:

1. `start_run()` freezes the waterfall for the report (sums computed by the
   database) and books the pool in the ledger, in one transaction.
2. `write_statements()` streams the backers in user-id order, splits the
   pool with `split_pro_rata` over their paid stakes (only the integer
   weights are held, in an array) and writes statements batch by batch,
   each batch committed with the run's resume point. Running it again after
   a crash, or after it finished, writes nothing twice.
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, insert, or_, select
from sqlalchemy.orm import Session

from crowdfund import audit, ledger, transitions
from crowdfund.accounts.models import User
from crowdfund.errors import Conflict, DomainError, Forbidden, NotFound
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order
from crowdfund.funding.queries import paid_orders_of, paid_total, paid_units_and_backers
from crowdfund.ledger import Account, EntryKind
from crowdfund.mail import queue_email
from crowdfund.money import split_pro_rata
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun, PayoutStatement, ReportStatus, RunStatus
from crowdfund.payouts.states import REPORT_TRANSITIONS, RUN_TRANSITIONS
from crowdfund.payouts.waterfall import Terms, Waterfall, waterfall
from crowdfund.uploads import StoredFile, store_file

MAX_RECEIPTS_CENTS = 10**14  # a trillion dollars: anything above is a typing error
SUPPORTING_FILE_TYPES = {"application/pdf", "text/csv"}


def terms_of(film: Film) -> Terms:
    return Terms(film.recoup_share_bps, film.recoup_multiple_bps, film.profit_share_bps)


# --- reports ------------------------------------------------------------------------------


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


def file_report(session: Session, film: Film, user: User, data: ReportInput, *, now: datetime,
                attachment: bytes | None = None, max_bytes: int = 5 * 1024 * 1024) -> BoxOfficeReport:
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
    _refuse_overlap(session, film.id, data.period_start, data.period_end, corrects=data.corrects_report_id,
                    statuses=(ReportStatus.SUBMITTED, ReportStatus.APPROVED))
    report = BoxOfficeReport(
        film_id=film.id, period_start=data.period_start, period_end=data.period_end,
        net_receipts_cents=data.net_receipts_cents, note=data.note.strip()[:5000],
        status=ReportStatus.SUBMITTED.value, filed_by_id=user.id, filed_at=now,
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
        raise DomainError(f"Report #{data.corrects_report_id} is not a report of this film.", field="corrects_report")
    if original.corrects_report_id is not None:
        raise DomainError(f"Report #{original.id} is itself a correction: name the report it corrects, "
                          f"report #{original.corrects_report_id}.", field="corrects_report")
    if original.status != ReportStatus.APPROVED:
        raise DomainError(f"Report #{original.id} is not approved: only an approved report is corrected "
                          "(a report still waiting can be rejected and filed again).", field="corrects_report")
    if data.period_start < original.period_start or data.period_end > original.period_end:
        raise DomainError(f"A correction lies inside the period of the report it corrects: "
                          f"{original.period_start} to {original.period_end}.", field="period_start")


def _refuse_overlap(session: Session, film_id: int, start: date, end: date, *, corrects: int | None,
                    statuses: tuple[ReportStatus, ...], exclude_id: int | None = None) -> None:
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
        statement = statement.where(BoxOfficeReport.id != corrects, or_(
            BoxOfficeReport.corrects_report_id.is_(None), BoxOfficeReport.corrects_report_id != corrects))
    other = session.scalar(statement.order_by(BoxOfficeReport.period_start, BoxOfficeReport.id).limit(1))
    if other is not None:
        state = "approved" if other.status == ReportStatus.APPROVED else "waiting for finance"
        raise Conflict(
            f"This period overlaps report #{other.id} ({other.period_start} to {other.period_end}, {state}): "
            "its receipts would be counted twice. Choose a period that does not overlap, or file a correction "
            "of that report (fill in “Corrects report #”).", field="period_start")


REPORT = transitions.Machine(
    name="box-office report", model=BoxOfficeReport, column="status", transitions=REPORT_TRANSITIONS,
    audit_actions={ReportStatus.APPROVED: "box_office.approve", ReportStatus.REJECTED: "box_office.reject"},
    audit_object_type="box_office_report",
)
#: Finishing a run is not audited (the start was); marking it paid is.
RUN = transitions.Machine(
    name="payout run", model=PayoutRun, column="status", transitions=RUN_TRANSITIONS,
    audit_actions={RunStatus.PAID: "payout.paid"}, audit_object_type="payout_run",
)


def _move_report(session: Session, report: BoxOfficeReport, target: ReportStatus, *, finance: User, now: datetime,
                 reason: str | None = None) -> None:
    """The one way a report changes state: only a submitted report is decided, once."""
    if report.status != ReportStatus.SUBMITTED:
        raise Conflict("This report has already been decided; approved reports never change.")
    values: dict[str, object] = {"decided_by_id": finance.id, "decided_at": now}
    if reason is not None:
        values["rejection_reason"] = reason
    if not transitions.move(session, REPORT, report, target, now=now, actor=finance.id, reason=reason,
                            values=values, audit_after={"net_receipts_cents": report.net_receipts_cents}):
        raise Conflict("This report has already been decided.")


def _refuse_own_studio(report: BoxOfficeReport, finance: User) -> None:
    """Separation of duty: nobody decides on the receipts of their own studio."""
    if finance.studio_id is not None and finance.studio_id == report.film.studio_id:
        raise Forbidden("You are a member of this film's studio, so you cannot decide on its box-office reports: "
                        "another finance user must.")


def approve_report(session: Session, report: BoxOfficeReport, finance: User, *, now: datetime) -> None:
    if report.filed_by_id == finance.id:
        raise Forbidden("The person who filed a report cannot approve it.")
    _refuse_own_studio(report, finance)
    # Checked again here: reports filed before this rule, or in a race, may overlap.
    _lock_film_reports(session, report.film_id)
    _refuse_overlap(session, report.film_id, report.period_start, report.period_end,
                    corrects=report.corrects_report_id, statuses=(ReportStatus.APPROVED,), exclude_id=report.id)
    _move_report(session, report, ReportStatus.APPROVED, finance=finance, now=now)


def reject_report(session: Session, report: BoxOfficeReport, finance: User, reason: str, *, now: datetime) -> None:
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("Say why the report is rejected.", field="reason")
    if report.filed_by_id == finance.id:
        raise Forbidden("The person who filed a report cannot decide on it.")
    _refuse_own_studio(report, finance)
    _move_report(session, report, ReportStatus.REJECTED, finance=finance, now=now, reason=reason[:5000])


def film_reports(session: Session, film_id: int) -> list[BoxOfficeReport]:
    return list(session.scalars(select(BoxOfficeReport).where(BoxOfficeReport.film_id == film_id)
                                .order_by(BoxOfficeReport.filed_at, BoxOfficeReport.id)))


def reports_waiting(session: Session) -> list[BoxOfficeReport]:
    return list(session.scalars(select(BoxOfficeReport).where(BoxOfficeReport.status == ReportStatus.SUBMITTED)
                                .order_by(BoxOfficeReport.filed_at)))


def supporting_file(session: Session, report: BoxOfficeReport) -> StoredFile | None:
    return session.get(StoredFile, report.file_id) if report.file_id else None


# --- the run's figures ----------------------------------------------------------------------


def previous_runs(session: Session, film_id: int) -> list[PayoutRun]:
    return list(session.scalars(select(PayoutRun).where(PayoutRun.film_id == film_id).order_by(PayoutRun.sequence)))


def next_report_to_run(session: Session, film_id: int) -> BoxOfficeReport | None:
    """Runs follow approval order, so a carried negative amount reaches the right report."""
    return session.scalar(
        select(BoxOfficeReport)
        .outerjoin(PayoutRun, PayoutRun.report_id == BoxOfficeReport.id)
        .where(BoxOfficeReport.film_id == film_id, BoxOfficeReport.status == ReportStatus.APPROVED,
               PayoutRun.id.is_(None))
        .order_by(BoxOfficeReport.decided_at, BoxOfficeReport.id)
        .limit(1)
    )


def preview(session: Session, report: BoxOfficeReport) -> Waterfall:
    runs = previous_runs(session, report.film_id)
    return waterfall(
        terms_of(report.film),
        reported_cents=report.net_receipts_cents,
        principal_cents=paid_total(session, report.film_id),
        already_paid_cents=sum(r.pool_cents for r in runs),
        carried_in_cents=runs[-1].carry_out_cents if runs else 0,
    )


def start_run(session: Session, report: BoxOfficeReport, finance: User, *, now: datetime) -> PayoutRun:
    """Freeze the waterfall for an approved report and book the pool. Starting
    the same report twice returns the existing run."""
    # Starts of the same report queue on its row (PostgreSQL; SQLite writers
    # are serialised anyway): the second sees the first's run, never a duplicate.
    session.execute(select(BoxOfficeReport.id).where(BoxOfficeReport.id == report.id).with_for_update())
    existing = session.scalar(select(PayoutRun).where(PayoutRun.report_id == report.id))
    if existing is not None:
        return existing
    if report.status != ReportStatus.APPROVED:
        raise Conflict("Only approved reports are paid out.")
    first = next_report_to_run(session, report.film_id)
    if first is None or first.id != report.id:
        raise Conflict("Run the earlier approved reports of this film first, in the order they were approved.")
    figures = preview(session, report)
    total_stakes, backers = paid_units_and_backers(session, report.film_id)
    sequence = len(previous_runs(session, report.film_id)) + 1
    run = PayoutRun(
        report_id=report.id, film_id=report.film_id, sequence=sequence, status=RunStatus.COMPUTING.value,
        started_by_id=finance.id, started_at=now,
        reported_cents=figures.reported_cents, carried_in_cents=figures.carried_in_cents,
        receipts_cents=figures.receipts_cents, carry_out_cents=figures.carry_out_cents,
        principal_cents=figures.principal_cents, target_cents=figures.target_cents,
        already_paid_cents=figures.already_paid_cents, tier1_cents=figures.tier1_cents,
        receipts_used_by_tier1_cents=figures.receipts_used_by_tier1_cents, tier2_cents=figures.tier2_cents,
        pool_cents=figures.pool_cents if total_stakes else 0, total_stakes=total_stakes, backers=backers,
        statements_written=0,
    )
    if not total_stakes:
        run.tier1_cents = run.tier2_cents = 0
    session.add(run)
    session.flush()
    audit.record(session, action="payout.run", object_type="payout_run", object_id=run.id, now=now, actor=finance,
                 after={"report_id": report.id, "pool_cents": run.pool_cents, "receipts_cents": run.receipts_cents,
                        "backers": backers})
    if run.pool_cents:
        ledger.post(
            session, key=EntryKind.PAYOUT_POOL.key(run.id), kind=EntryKind.PAYOUT_POOL,
            lines=[(Account.studio(report.film.studio_id), run.pool_cents),
                   (Account.payouts_payable(run.film_id), -run.pool_cents)],
            now=now, film_id=run.film_id, memo=f"Backers' pool for report {report.id}",
        )
    return run


def _backer_weights(session: Session, film_id: int, batch_size: int) -> tuple[array[int], array[int]]:
    """(user ids, paid stakes) in user-id order, as compact integer arrays."""
    user_ids, stakes = array("q"), array("q")
    statement = (
        select(Order.user_id, func.sum(Order.units))
        .where(paid_orders_of(film_id))
        .group_by(Order.user_id)
        .order_by(Order.user_id)
        .execution_options(yield_per=batch_size)
    )
    for user_id, units in session.execute(statement):
        user_ids.append(user_id)
        stakes.append(int(units))
    return user_ids, stakes


def statement_number(film_id: int, sequence: int, position: int) -> str:
    return f"F{film_id}-R{sequence}-{position + 1:06d}"


def write_statements(
    session: Session,
    run: PayoutRun,
    *,
    now: datetime,
    batch_size: int = 2000,
    max_batches: int | None = None,
    commit: Callable[[], None] | None = None,
    announce: bool = True,
) -> bool:
    """Write the run's statements from its resume point. Returns True when the
    run is complete. `commit` is called after each batch (the CLI and the
    view pass session.commit). `announce` e-mails each backer afterwards."""
    if run.status != RunStatus.COMPUTING:
        return True
    run_id = run.id
    user_ids, stakes = _backer_weights(session, run.film_id, batch_size)
    if sum(stakes) != run.total_stakes:
        raise Conflict("Paid stakes changed since the run started; the run cannot be completed.")
    parts = split_pro_rata(run.pool_cents, stakes) if len(stakes) else []
    batches = 0
    while True:
        # Each batch holds the run's row, so two writers of the same run (two
        # "start" clicks, a click and the worker) take turns from the resume point.
        run = session.scalar(select(PayoutRun).where(PayoutRun.id == run_id).with_for_update(of=PayoutRun)
                             .execution_options(populate_existing=True))  # type: ignore[assignment]
        if run.status != RunStatus.COMPUTING:
            return True
        position = run.statements_written
        if position >= len(user_ids):
            break
        chunk = range(position, min(position + batch_size, len(user_ids)))
        chunk_users = [user_ids[i] for i in chunk]
        before = dict(session.execute(
            select(PayoutStatement.user_id, func.sum(PayoutStatement.amount_cents))
            .join(PayoutRun, PayoutRun.id == PayoutStatement.run_id)
            .where(PayoutRun.film_id == run.film_id, PayoutRun.sequence < run.sequence,
                   PayoutStatement.user_id.in_(chunk_users))
            .group_by(PayoutStatement.user_id)
        ).tuples().all())
        # Core insert: a batch of plain rows, no ORM objects to track.
        session.execute(insert(PayoutStatement), [
            {"number": statement_number(run.film_id, run.sequence, i), "run_id": run.id, "user_id": user_ids[i],
             "position": i, "stakes": stakes[i], "amount_cents": parts[i],
             "cumulative_cents": int(before.get(user_ids[i], 0)) + parts[i], "created_at": now}
            for i in chunk
        ])
        position = chunk.stop
        run.statements_written = position
        session.flush()
        if commit:
            commit()
        session.expunge_all()
        batches += 1
        if max_batches is not None and batches >= max_batches and position < len(user_ids):
            return False
    _finish_run(session, run, now=now)
    if commit:
        commit()
    if announce:
        announce_statements(session, run.id, commit=commit)
    return True


def _finish_run(session: Session, run: PayoutRun, *, now: datetime) -> None:
    written = session.execute(
        select(func.count(), func.coalesce(func.sum(PayoutStatement.amount_cents), 0))
        .where(PayoutStatement.run_id == run.id)
    ).one()
    if int(written[1]) != run.pool_cents or int(written[0]) != run.backers:
        raise Conflict(f"Run {run.id}: statements sum to {written[1]} cents, the pool is {run.pool_cents}.")
    if run.status == RunStatus.COMPUTING:
        # Of two finishers one moves it; the other finds it computed.
        transitions.move(session, RUN, run, RunStatus.COMPUTED, now=now, values={"computed_at": now})


def announce_statements(session: Session, run_id: int, *, batch_size: int = 1000,
                        commit: Callable[[], None] | None = None) -> int:
    """One e-mail per statement (keyed, so a rerun sends nothing twice),
    committed batch by batch so the outbox never holds a whole run."""
    sent, after = 0, -1
    while True:
        rows = session.execute(
            select(PayoutStatement.id, PayoutStatement.number, PayoutStatement.amount_cents, User.email,
                   User.display_name, Film.title, PayoutStatement.position)
            .join(User, User.id == PayoutStatement.user_id)
            .join(PayoutRun, PayoutRun.id == PayoutStatement.run_id)
            .join(Film, Film.id == PayoutRun.film_id)
            .where(PayoutStatement.run_id == run_id, PayoutStatement.position > after)
            .order_by(PayoutStatement.position)
            .limit(batch_size)
        ).all()
        if not rows:
            return sent
        for statement_id, number, amount, email, name, title, position in rows:
            sent += queue_email(session, key=f"statement:{statement_id}", to=email, template="statement_ready",
                                number=number, amount_cents=amount, name=name, film_title=title,
                                statement_id=statement_id, payment_status="computed (not yet paid)")
            after = position
        if commit:
            commit()


def run_payout(session: Session, report: BoxOfficeReport, finance: User, *, now: datetime,
               batch_size: int = 2000, max_batches: int | None = None) -> PayoutRun:
    """Start (or resume) the run for a report, committing as it goes."""
    run = start_run(session, report, finance, now=now)
    session.commit()
    write_statements(session, run, now=now, batch_size=batch_size, max_batches=max_batches, commit=session.commit)
    return session.get(PayoutRun, run.id)  # type: ignore[return-value]


def runs_to_finish(session: Session) -> list[int]:
    return list(session.scalars(select(PayoutRun.id).where(PayoutRun.status == RunStatus.COMPUTING)
                                .order_by(PayoutRun.id)))


def mark_paid(session: Session, run: PayoutRun, finance: User, bank_reference: str, *, now: datetime) -> None:
    reference = (bank_reference or "").strip()
    if not reference:
        raise DomainError("Enter the bank transfer's reference.", field="bank_reference")
    if run.started_by_id == finance.id:
        # Separation of duty: one person computes what is owed, another confirms it left the bank.
        raise Forbidden("You started this payout run, so another finance user must mark it paid.")
    if run.status == RunStatus.PAID:
        return
    if run.status != RunStatus.COMPUTED:
        raise Conflict("The run's statements are not all written yet.")
    if not transitions.move(session, RUN, run, RunStatus.PAID, now=now, actor=finance,
                            values={"paid_at": now, "paid_by_id": finance.id, "bank_reference": reference[:120]},
                            audit_after={"bank_reference": reference[:120]}):
        return  # another finance user marked it paid a moment ago
    if run.pool_cents:
        ledger.post(
            session, key=EntryKind.PAYOUT_PAID.key(run.id), kind=EntryKind.PAYOUT_PAID,
            lines=[(Account.payouts_payable(run.film_id), run.pool_cents),
                   (Account.PAID_OUT, -run.pool_cents)],
            now=now, film_id=run.film_id, memo=f"Run {run.id} paid, bank reference {reference[:80]}",
        )


# --- reading statements ---------------------------------------------------------------------


def own_statement(session: Session, user: User, statement_id: int) -> PayoutStatement:
    statement = session.get(PayoutStatement, statement_id)
    if statement is None or statement.user_id != user.id:
        raise NotFound("No such statement.")
    return statement


def user_statements(session: Session, user_id: int) -> list[PayoutStatement]:
    return list(session.scalars(select(PayoutStatement).where(PayoutStatement.user_id == user_id)
                                .order_by(PayoutStatement.created_at.desc(), PayoutStatement.id.desc())))


def paid_to_user(session: Session, user_id: int, film_ids: list[int]) -> dict[int, int]:
    """Per film, what the user's statements of runs marked paid add up to:
    computed runs are owed, not paid, and count for nothing here."""
    if not film_ids:
        return {}
    rows = session.execute(
        select(PayoutRun.film_id, func.sum(PayoutStatement.amount_cents))
        .join(PayoutRun, PayoutRun.id == PayoutStatement.run_id)
        .where(PayoutStatement.user_id == user_id, PayoutRun.status == RunStatus.PAID,
               PayoutRun.film_id.in_(film_ids))
        .group_by(PayoutRun.film_id)
    ).all()
    paid = {film_id: 0 for film_id in film_ids}
    paid.update({film_id: int(total) for film_id, total in rows})
    return paid


def export_rows(session: Session, run_id: int, batch_size: int = 5000) -> Iterator[tuple[str, int, str, str, int, int]]:
    """(number, backer id, name, e-mail, stakes, amount cents) per statement, streamed."""
    statement = (
        select(PayoutStatement.number, User.id, User.display_name, User.email, PayoutStatement.stakes,
               PayoutStatement.amount_cents)
        .join(User, User.id == PayoutStatement.user_id)
        .where(PayoutStatement.run_id == run_id)
        .order_by(PayoutStatement.position)
        .execution_options(yield_per=batch_size)
    )
    for number, user_id, name, email, stakes, amount in session.execute(statement):
        yield number, user_id, name, email, int(stakes), int(amount)

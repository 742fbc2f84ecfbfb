"""Payout runs: the waterfall frozen for an approved report, the pool booked,
statements written batch by batch, the run marked paid.

These functions only flush. The loop that writes a run's batches and commits
each one is a job: crowdfund/workflows/payout_run.py.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from crowdfund import audit, ledger, transitions
from crowdfund.accounts.models import User
from crowdfund.errors import Conflict, DomainError, Forbidden
from crowdfund.films.models import Film
from crowdfund.funding.models import Order
from crowdfund.funding.queries import paid_orders_of, paid_total, paid_units_and_backers
from crowdfund.ledger import Account, EntryKind
from crowdfund.money import split_pro_rata
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun, PayoutStatement, ReportStatus, RunStatus
from crowdfund.payouts.states import RUN_TRANSITIONS
from crowdfund.payouts.waterfall import Terms, Waterfall, waterfall


def terms_of(film: Film) -> Terms:
    return Terms(film.recoup_share_bps, film.recoup_multiple_bps, film.profit_share_bps)


#: Finishing a run is not audited (the start was); marking it paid is.
RUN = transitions.Machine(
    name="payout run",
    model=PayoutRun,
    column="status",
    transitions=RUN_TRANSITIONS,
    audit_actions={RunStatus.PAID: "payout.paid"},
    audit_object_type="payout_run",
)


def previous_runs(session: Session, film_id: int) -> list[PayoutRun]:
    return list(
        session.scalars(select(PayoutRun).where(PayoutRun.film_id == film_id).order_by(PayoutRun.sequence))
    )


def next_report_to_run(session: Session, film_id: int) -> BoxOfficeReport | None:
    """Runs follow approval order, so a carried negative amount reaches the right report."""
    return session.scalar(
        select(BoxOfficeReport)
        .outerjoin(PayoutRun, PayoutRun.report_id == BoxOfficeReport.id)
        .where(
            BoxOfficeReport.film_id == film_id,
            BoxOfficeReport.status == ReportStatus.APPROVED,
            PayoutRun.id.is_(None),
        )
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
        raise Conflict(
            "Run the earlier approved reports of this film first, in the order they were approved."
        )
    figures = preview(session, report)
    total_stakes, backers = paid_units_and_backers(session, report.film_id)
    sequence = len(previous_runs(session, report.film_id)) + 1
    run = PayoutRun(
        report_id=report.id,
        film_id=report.film_id,
        sequence=sequence,
        status=RunStatus.COMPUTING.value,
        started_by_id=finance.id,
        started_at=now,
        reported_cents=figures.reported_cents,
        carried_in_cents=figures.carried_in_cents,
        receipts_cents=figures.receipts_cents,
        carry_out_cents=figures.carry_out_cents,
        principal_cents=figures.principal_cents,
        target_cents=figures.target_cents,
        already_paid_cents=figures.already_paid_cents,
        tier1_cents=figures.tier1_cents,
        receipts_used_by_tier1_cents=figures.receipts_used_by_tier1_cents,
        tier2_cents=figures.tier2_cents,
        pool_cents=figures.pool_cents if total_stakes else 0,
        total_stakes=total_stakes,
        backers=backers,
        statements_written=0,
    )
    if not total_stakes:
        run.tier1_cents = run.tier2_cents = 0
    session.add(run)
    session.flush()
    audit.record(
        session,
        action="payout.run",
        object_type="payout_run",
        object_id=run.id,
        now=now,
        actor=finance,
        after={
            "report_id": report.id,
            "pool_cents": run.pool_cents,
            "receipts_cents": run.receipts_cents,
            "backers": backers,
        },
    )
    if run.pool_cents:
        ledger.post(
            session,
            key=EntryKind.PAYOUT_POOL.key(run.id),
            kind=EntryKind.PAYOUT_POOL,
            lines=[
                (Account.studio(report.film.studio_id), run.pool_cents),
                (Account.payouts_payable(run.film_id), -run.pool_cents),
            ],
            now=now,
            film_id=run.film_id,
            memo=f"Backers' pool for report {report.id}",
        )
    return run


@dataclass(frozen=True)
class RunWeights:
    """A run's backers in user-id order with their paid stakes (compact integer
    arrays) and each one's share of the pool: what every batch of the run reads."""

    user_ids: array[int]
    stakes: array[int]
    parts: list[int]

    def __len__(self) -> int:
        return len(self.user_ids)


def run_weights(session: Session, run: PayoutRun, *, batch_size: int = 2000) -> RunWeights:
    """Stream the backers of the run's film and split the pool with
    `split_pro_rata` over their paid stakes (only the integer weights are held)."""
    user_ids, stakes = array("q"), array("q")
    statement = (
        select(Order.user_id, func.sum(Order.units))
        .where(paid_orders_of(run.film_id))
        .group_by(Order.user_id)
        .order_by(Order.user_id)
        .execution_options(yield_per=batch_size)
    )
    for user_id, units in session.execute(statement):
        user_ids.append(user_id)
        stakes.append(int(units))
    if sum(stakes) != run.total_stakes:
        raise Conflict("Paid stakes changed since the run started; the run cannot be completed.")
    parts = split_pro_rata(run.pool_cents, stakes) if len(stakes) else []
    return RunWeights(user_ids, stakes, parts)


def statement_number(film_id: int, sequence: int, position: int) -> str:
    return f"F{film_id}-R{sequence}-{position + 1:06d}"


@dataclass(frozen=True)
class Batch:
    """What `write_batch` did: `run` is the run's row, locked in this transaction."""

    run: PayoutRun
    #: Statements this batch wrote; 0: every statement was already written.
    written: int

    @property
    def complete(self) -> bool:
        """True when the run's statements are all written (finish it with `finish_run`)."""
        return self.written == 0


def write_batch(
    session: Session, run_id: int, weights: RunWeights, *, now: datetime, batch_size: int = 2000
) -> Batch | None:
    """Write the run's next batch of statements from its resume point
    (`statements_written`), and move the resume point on. None when the run
    is no longer computing. Flushes only: the job that calls it owns the
    transaction and commits each batch (crowdfund/workflows/payout_run.py), so a
    crash loses at most one batch and a rerun writes nothing twice."""
    # Each batch holds the run's row, so two writers of the same run (two
    # "start" clicks, a click and the worker) take turns from the resume point.
    run = session.scalar(
        select(PayoutRun)
        .where(PayoutRun.id == run_id)
        .with_for_update(of=PayoutRun)
        .execution_options(populate_existing=True)
    )
    assert run is not None
    if run.status != RunStatus.COMPUTING:
        return None
    position = run.statements_written
    if position >= len(weights):
        return Batch(run, 0)
    user_ids, stakes, parts = weights.user_ids, weights.stakes, weights.parts
    chunk = range(position, min(position + batch_size, len(user_ids)))
    chunk_users = [user_ids[i] for i in chunk]
    before = dict(
        session.execute(
            select(PayoutStatement.user_id, func.sum(PayoutStatement.amount_cents))
            .join(PayoutRun, PayoutRun.id == PayoutStatement.run_id)
            .where(
                PayoutRun.film_id == run.film_id,
                PayoutRun.sequence < run.sequence,
                PayoutStatement.user_id.in_(chunk_users),
            )
            .group_by(PayoutStatement.user_id)
        )
        .tuples()
        .all()
    )
    # Core insert: a batch of plain rows, no ORM objects to track.
    session.execute(
        insert(PayoutStatement),
        [
            {
                "number": statement_number(run.film_id, run.sequence, i),
                "run_id": run.id,
                "user_id": user_ids[i],
                "position": i,
                "stakes": stakes[i],
                "amount_cents": parts[i],
                "cumulative_cents": int(before.get(user_ids[i], 0)) + parts[i],
                "created_at": now,
            }
            for i in chunk
        ],
    )
    run.statements_written = chunk.stop
    session.flush()
    return Batch(run, len(chunk))


def finish_run(session: Session, run: PayoutRun, *, now: datetime) -> None:
    """Check the written statements add up to the pool and move the run to computed."""
    written = session.execute(
        select(func.count(), func.coalesce(func.sum(PayoutStatement.amount_cents), 0)).where(
            PayoutStatement.run_id == run.id
        )
    ).one()
    if int(written[1]) != run.pool_cents or int(written[0]) != run.backers:
        raise Conflict(f"Run {run.id}: statements sum to {written[1]} cents, the pool is {run.pool_cents}.")
    if run.status == RunStatus.COMPUTING:
        # Of two finishers one moves it; the other finds it computed.
        transitions.move(session, RUN, run, RunStatus.COMPUTED, now=now, values={"computed_at": now})


def runs_to_finish(session: Session) -> list[int]:
    return list(
        session.scalars(
            select(PayoutRun.id).where(PayoutRun.status == RunStatus.COMPUTING).order_by(PayoutRun.id)
        )
    )


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
    if not transitions.move(
        session,
        RUN,
        run,
        RunStatus.PAID,
        now=now,
        actor=finance,
        values={"paid_at": now, "paid_by_id": finance.id, "bank_reference": reference[:120]},
        audit_after={"bank_reference": reference[:120]},
    ):
        return  # another finance user marked it paid a moment ago
    if run.pool_cents:
        ledger.post(
            session,
            key=EntryKind.PAYOUT_PAID.key(run.id),
            kind=EntryKind.PAYOUT_PAID,
            lines=[
                (Account.payouts_payable(run.film_id), run.pool_cents),
                (Account.PAID_OUT, -run.pool_cents),
            ],
            now=now,
            film_id=run.film_id,
            memo=f"Run {run.id} paid, bank reference {reference[:80]}",
        )

"""The payout run as a job: it owns its transactions, batch by batch.

A run is computed in two steps so that a million stakes never sit in memory
and a crash loses at most one batch:

1. `runs.start_run()` freezes the waterfall for the report (sums computed by
   the database) and books the pool in the ledger; this job commits it.
2. `write_statements()` streams the backers in user-id order, splits the pool
   with `split_pro_rata` over their paid stakes (`runs.run_weights`: only the
   integer weights are held, in an array) and has `runs.write_batch` write the
   statements batch by batch; THIS JOB commits each batch with the run's
   resume point. Running it again after a crash, or after it finished,
   writes nothing twice.

The domain functions it calls (crowdfund/payouts/runs.py, statements.py)
only flush; the commits are here, and only here. The finance view only
starts a run (`start_payout`): workers write its statements from outbox rows
(crowdfund/workflows/tasks.py); `flask payouts process` finishes runs by hand.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun, RunStatus
from crowdfund.payouts.runs import finish_run, run_weights, start_run, write_batch
from crowdfund.payouts.statements import announce_batch
from crowdfund.workflows.task_requests import schedule_statements


def write_statements(
    session: Session,
    run: PayoutRun,
    *,
    now: datetime,
    batch_size: int = 2000,
    max_batches: int | None = None,
    announce: bool = True,
) -> bool:
    """Write the run's statements from its resume point, committing after each
    batch (the session is emptied between batches). Returns True when the
    run is complete. `announce` e-mails each backer afterwards."""
    if run.status != RunStatus.COMPUTING:
        return True
    run_id = run.id
    weights = run_weights(session, run, batch_size=batch_size)
    batches = 0
    while True:
        batch = write_batch(session, run_id, weights, now=now, batch_size=batch_size)
        if batch is None:
            return True
        if batch.complete:
            break
        position = batch.run.statements_written
        session.commit()
        session.expunge_all()
        batches += 1
        if max_batches is not None and batches >= max_batches and position < len(weights):
            return False
    finish_run(session, batch.run, now=now)
    session.commit()
    if announce:
        announce_statements(session, run_id)
    return True


def announce_statements(session: Session, run_id: int, *, batch_size: int = 1000) -> int:
    """One e-mail per statement (keyed, so a rerun sends nothing twice),
    committed batch by batch so the outbox never holds a whole run."""
    sent, after = 0, -1
    while True:
        batch = announce_batch(session, run_id, after=after, batch_size=batch_size)
        if batch is None:
            return sent
        queued, after = batch
        sent += queued
        session.commit()


def start_payout(session: Session, report: BoxOfficeReport, finance: User, *, now: datetime) -> PayoutRun:
    """Finance starts the run for a report (in the caller's transaction: a
    request's): the waterfall is frozen and the pool booked now, and the
    statements are written, then announced, by workers from an outbox row
    committed with it. Starting again returns the same run and adds nothing."""
    run = start_run(session, report, finance, now=now)
    session.flush()
    if run.status == RunStatus.COMPUTING:
        schedule_statements(session, run, now=now)
    return run


def run_payout(
    session: Session,
    report: BoxOfficeReport,
    finance: User,
    *,
    now: datetime,
    batch_size: int = 2000,
    max_batches: int | None = None,
) -> PayoutRun:
    """Start (or resume) the run for a report, committing as it goes."""
    run = start_run(session, report, finance, now=now)
    session.commit()
    write_statements(session, run, now=now, batch_size=batch_size, max_batches=max_batches)
    return session.get_one(PayoutRun, run.id)

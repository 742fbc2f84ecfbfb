"""The batch jobs of `flask funding release-holds` and `flask payouts process`
(the round close is round_close.py, the payments repair reconcile.py).

Transactions: each job owns them (a workflow): one unit (a film, a payout
run) in transactions of its own (crowdfund/jobs.py: a unit that raises is
rolled back alone, logged and reported, and the others go on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.inventory import release_expired_holds
from crowdfund.jobs import UnitFailure, in_own_transaction
from crowdfund.payouts.models import PayoutRun
from crowdfund.payouts.runs import runs_to_finish
from crowdfund.workflows.payout_run import write_statements


@dataclass
class ReleaseReport:
    released: int
    failures: list[UnitFailure] = field(default_factory=list)


@dataclass
class PayoutsReport:
    completed: list[int]
    failures: list[UnitFailure] = field(default_factory=list)


def release_holds(session: Session, now: Callable[[], datetime]) -> ReleaseReport:
    """Give back the stakes of every lapsed hold, film by film, each film in
    a transaction of its own."""
    released, failures = 0, list[UnitFailure]()
    for film_id in session.scalars(select(Film.id).where(Film.state == FilmState.FUNDING)).all():

        def release(film_id: int = film_id) -> int:
            return release_expired_holds(session, film_id, now())

        released += in_own_transaction(session, f"film {film_id}", failures, release) or 0
    return ReleaseReport(released, failures)


def finish_payout_runs(session: Session, now: Callable[[], datetime], *, batch_size: int) -> PayoutsReport:
    """Finish every payout run still writing statements; each batch of
    statements commits, and a failure rolls back only the batch in progress."""
    completed, failures = list[int](), list[UnitFailure]()
    for run_id in runs_to_finish(session):

        def finish(run_id: int = run_id) -> bool:
            return write_statements(
                session, session.get_one(PayoutRun, run_id), now=now(), batch_size=batch_size
            )

        if in_own_transaction(session, f"payout run {run_id}", failures, finish):
            completed.append(run_id)
    return PayoutsReport(completed, failures)

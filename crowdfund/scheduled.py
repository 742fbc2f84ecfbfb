"""The jobs, one function each, in the current app: run by Celery workers
(crowdfund/worker.py), periodically or from outbox rows, and by hand by the
`flask` commands (crowdfund/cli.py). Each owns its transactions
(crowdfund/workflows/), is idempotent and resumable: running it twice, or on
two workers at once, repeats nothing. Each returns what it did; a unit that
failed is in its report's failures, and the others were done.

The periodic round close and payout jobs only fan out: they write one
outbox row per film or run, and workers carry the rows out in parallel
(`run_task_job`). By hand (`flask funding close-rounds`) the same work runs
to the end in the command's process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import current_app

from crowdfund.mail.delivery import DeliveryReport
from crowdfund.outbox.running import RunOutcome, RunSettings, run_pending, run_task, sweep
from crowdfund.payouts.models import PayoutRun
from crowdfund.payouts.runs import runs_to_finish
from crowdfund.site.web import app_services
from crowdfund.workflows.jobs import PayoutsReport, ReleaseReport, finish_payout_runs, release_holds
from crowdfund.workflows.reconcile import JobReport, reconcile
from crowdfund.workflows.round_close import CloseReport, close_rounds, films_due, films_owing_refunds
from crowdfund.workflows.task_requests import schedule_refunds, schedule_round_close, schedule_statements
from crowdfund.workflows.tasks import TaskSettings, handlers


def _hold_window() -> timedelta:
    return timedelta(minutes=current_app.config["HOLD_MINUTES"])


def task_settings() -> TaskSettings:
    services, config = app_services(), current_app.config
    return TaskSettings(
        gateway=services.gateway,
        clock=services.clock,
        hold_window=_hold_window(),
        fee_bps=config["PLATFORM_FEE_BPS"],
        refund_batch=config["REFUND_BATCH_SIZE"],
        statement_batch=config["STATEMENT_BATCH_SIZE"],
        refund_claim_timeout=timedelta(seconds=config["REFUND_CLAIM_TIMEOUT_SECONDS"]),
    )


def run_settings() -> RunSettings:
    config = current_app.config
    return RunSettings(
        lease=timedelta(seconds=config["OUTBOX_LEASE_SECONDS"]),
        max_attempts=config["OUTBOX_MAX_ATTEMPTS"],
        backoff=timedelta(seconds=config["OUTBOX_BACKOFF_SECONDS"]),
    )


def run_task_job(task_id: int) -> RunOutcome:
    """Carry out one outbox row; a row to retry is handed back with its delay."""
    services = app_services()
    with services.sessions() as session:
        outcome = run_task(
            session, task_id, handlers(task_settings()), now=services.clock, settings=run_settings()
        )
    if outcome.result == "retry" and outcome.retry_in is not None:
        services.handoff.task(task_id, outcome.retry_in)
    return outcome


def run_pending_job() -> list[RunOutcome]:
    """Every due outbox row, here and now (`flask jobs run-pending`; tests)."""
    services = app_services()
    with services.sessions() as session:
        return run_pending(session, handlers(task_settings()), now=services.clock, settings=run_settings())


@dataclass
class FanOutReport:
    #: Rows written (each hands one film or run to the workers).
    scheduled: int = 0


def schedule_round_close_job() -> FanOutReport:
    """The periodic round close: one row per film past its deadline, and a
    refund chain for every failed or cancelled film still owing refunds."""
    services = app_services()
    with services.sessions() as session:
        now = services.clock()
        scheduled = schedule_round_close(session, films_due(session, now, _hold_window()), now=now)
        scheduled += sum(
            schedule_refunds(session, film_id, now=now) for film_id in films_owing_refunds(session)
        )
        session.commit()
    return FanOutReport(scheduled)


def schedule_payouts_job() -> FanOutReport:
    """The periodic payout job: every run still writing statements gets its next batch's row."""
    services = app_services()
    with services.sessions() as session:
        now, scheduled = services.clock(), 0
        for run_id in runs_to_finish(session):
            scheduled += schedule_statements(session, session.get_one(PayoutRun, run_id), now=now)
        session.commit()
    return FanOutReport(scheduled)


def sweep_job() -> FanOutReport:
    """Hand on the outbox rows a crash lost (mail left waiting is the periodic mail.deliver's)."""
    services = app_services()
    after = timedelta(seconds=current_app.config["OUTBOX_SWEEP_SECONDS"])
    with services.sessions() as session:
        report = sweep(session, services.handoff, now=services.clock(), after=after)
    return FanOutReport(len(report.handed))


def close_rounds_job(batch_size: int = 500) -> CloseReport:
    """By hand: decide every film past its deadline (and its hold window); refund failed rounds."""
    services = app_services()
    with services.sessions() as session:
        return close_rounds(
            session,
            services.gateway,
            now=services.clock(),
            hold_window=_hold_window(),
            fee_bps=current_app.config["PLATFORM_FEE_BPS"],
            batch_size=batch_size,
        )


def release_holds_job() -> ReleaseReport:
    """Give back the stakes of lapsed holds."""
    services = app_services()
    with services.sessions() as session:
        return release_holds(session, services.clock)


def reconcile_job() -> JobReport:
    """Settle, by asking Stripe, the orders whose payment outcome was not recorded."""
    services = app_services()
    with services.sessions() as session:
        return reconcile(session, services.gateway, now=services.clock())


def finish_payouts_job(batch_size: int = 2000) -> PayoutsReport:
    """By hand: finish every payout run still writing statements."""
    services = app_services()
    with services.sessions() as session:
        return finish_payout_runs(session, services.clock, batch_size=batch_size)


def deliver_mail_job() -> DeliveryReport:
    """Send the e-mail that is due in the outbox."""
    return app_services().mail_delivery.deliver_pending()

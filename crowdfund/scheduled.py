"""The periodic jobs, one function each, in the current app: run on schedule by
Celery workers (crowdfund/worker.py) and by hand by the `flask` commands
(crowdfund/cli.py). Each owns its transactions (crowdfund/workflows/), is
idempotent and resumable: running it twice, or on two workers at once,
repeats nothing. Each returns what it did; a unit that failed is in its
report's failures, and the others were done.
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app

from crowdfund.mail.delivery import DeliveryReport
from crowdfund.site.web import app_services
from crowdfund.workflows.jobs import PayoutsReport, ReleaseReport, finish_payout_runs, release_holds
from crowdfund.workflows.reconcile import JobReport, reconcile
from crowdfund.workflows.round_close import CloseReport, close_rounds


def close_rounds_job(batch_size: int = 500) -> CloseReport:
    """Decide every film past its deadline (and its hold window); refund failed rounds."""
    services = app_services()
    with services.sessions() as session:
        return close_rounds(
            session,
            services.gateway,
            now=services.clock(),
            hold_window=timedelta(minutes=current_app.config["HOLD_MINUTES"]),
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
    """Finish every payout run still writing statements."""
    services = app_services()
    with services.sessions() as session:
        return finish_payout_runs(session, services.clock, batch_size=batch_size)


def deliver_mail_job() -> DeliveryReport:
    """Send the e-mail that is due in the outbox."""
    return app_services().mail_delivery.deliver_pending()

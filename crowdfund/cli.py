"""`flask` commands: each parses its arguments, calls one function and
prints what it did. A one-shot command commits once, like a request
(`_unit_of_work()`); the periodic jobs (crowdfund/scheduled.py, the same
functions the Celery workers run on schedule) own their transactions."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from crowdfund import scheduled
from crowdfund.accounts import studios
from crowdfund.accounts import users as account_users
from crowdfund.accounts.models import Role
from crowdfund.errors import DomainError
from crowdfund.jobs import UnitFailure
from crowdfund.site.web import app_services


def _session() -> Session:
    return app_services().sessions()


@contextmanager
def _unit_of_work() -> Iterator[Session]:
    """A one-shot command's session: committed once when the block ends, rolled
    back (nothing written) when it raises."""
    with _session() as session, session.begin():
        yield session


def _now() -> datetime:
    return app_services().clock()


def _exit_on_failures(failures: list[UnitFailure]) -> None:
    """Name every unit that failed (its traceback is in the log) and exit 1."""
    if not failures:
        return
    click.echo(f"{len(failures)} failed (the others were done; rerun after fixing):", err=True)
    for failure in failures:
        click.echo(f"  {failure}", err=True)
    raise click.exceptions.Exit(1)


def register_cli(app: Flask) -> None:
    users = AppGroup("users", help="Manage accounts.")

    @users.command("create")
    @click.argument("email")
    @click.option("--role", "role", type=click.Choice([r.value for r in Role]), default=Role.FAN.value)
    @click.option("--studio", "studio_name", help="Studio organisation (required for --role studio).")
    @click.option(
        "--name", "display_name", default=None, help="Display name (default: the e-mail's local part)."
    )
    @click.option(
        "--password", default=None, help="Password; a random one is generated and printed if omitted."
    )
    def create_user(
        email: str, role: str, studio_name: str | None, display_name: str | None, password: str | None
    ) -> None:
        """Create an account with ROLE (fan, studio, finance, admin)."""
        if role == Role.STUDIO and not studio_name:
            raise click.UsageError("--role studio needs --studio NAME")
        generated = password is None
        password = password or secrets.token_urlsafe(12)
        try:
            with _unit_of_work() as session:
                stored_roles = (Role(role),) if role != Role.STUDIO else ()
                # Made by staff, who know the address: confirmed from the start.
                user = account_users.create_user(
                    session,
                    email,
                    password,
                    display_name or email.split("@")[0],
                    roles=stored_roles,
                    email_verified_at=_now(),
                )
                if role == Role.STUDIO:
                    studios.set_studio(
                        session, user, studios.get_or_create_studio(session, studio_name or "")
                    )
        except DomainError as exc:
            raise click.ClickException(exc.message) from exc
        click.echo(f"Created {user.email} with role {role}.")
        if generated:
            click.echo(f"Password: {password}")

    app.cli.add_command(users)

    funding = AppGroup("funding", help="Funding rounds.")

    @funding.command("close-rounds")
    @click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
    def close_rounds_command(batch_size: int) -> None:
        """Decide every film past its deadline; refund failed rounds. Safe to rerun."""
        report = scheduled.close_rounds_job(batch_size)
        click.echo(
            f"funded: {len(report.funded)} film(s), failed: {len(report.failed)} film(s), "
            f"refunds decided: {report.refunds_decided}, refunds made: {report.refunds_made}"
        )
        _exit_on_failures(report.failures)

    @funding.command("release-holds")
    def release_holds_command() -> None:
        """Give back the stakes of lapsed holds (holds also free themselves when needed)."""
        report = scheduled.release_holds_job()
        click.echo(f"released {report.released} held stake(s)")
        _exit_on_failures(report.failures)

    app.cli.add_command(funding)

    payments = AppGroup("payments", help="Payments.")

    @payments.command("reconcile")
    def reconcile_command() -> None:
        """Settle orders whose payment outcome was not recorded, by asking Stripe. Safe any time."""
        report = scheduled.reconcile_job()
        click.echo(", ".join(f"{key}: {value}" for key, value in report.counts.items()))
        _exit_on_failures(report.failures)

    app.cli.add_command(payments)

    payouts = AppGroup("payouts", help="Box-office payouts.")

    @payouts.command("process")
    @click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(1, 100_000))
    def process_payouts_command(batch_size: int) -> None:
        """Finish every payout run still writing statements. Resumable; safe to rerun."""
        report = scheduled.finish_payouts_job(batch_size)
        for run_id in report.completed:
            click.echo(f"run {run_id}: complete")
        _exit_on_failures(report.failures)

    app.cli.add_command(payouts)

    mail = AppGroup("mail", help="E-mail.")

    @mail.command("deliver")
    def deliver_mail_command() -> None:
        """Send the e-mail waiting in the outbox (what is due). Safe to run any time (the scheduler runs it too)."""
        report = scheduled.deliver_mail_job()
        click.echo(f"sent: {report.sent}, to retry: {report.retried}, failed: {report.failed}")

    app.cli.add_command(mail)

    jobs = AppGroup("jobs", help="The outbox of work that workers carry out.")

    @jobs.command("run-pending")
    def run_pending_command() -> None:
        """Carry out every due outbox row here and now (what the workers do). Safe alongside them."""
        outcomes = scheduled.run_pending_job()
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome.result] = counts.get(outcome.result, 0) + 1
        click.echo(", ".join(f"{result}: {n}" for result, n in sorted(counts.items())) or "nothing due")
        _exit_on_failures(
            [UnitFailure(f"task {o.task_id} ({o.kind})", o.error or "") for o in outcomes if o.error]
        )

    @jobs.command("sweep")
    def sweep_command() -> None:
        """Hand on to the workers the outbox rows a crash lost (the scheduler runs it too)."""
        click.echo(f"handed on: {scheduled.sweep_job().scheduled}")

    app.cli.add_command(jobs)

"""Admin: "Jobs and mail": the work outbox (outbox_tasks) per kind and the
e-mail outbox, what failed (with a retry), what runs, what waits, and what
no worker has (lost: should be 0)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for

from crowdfund import audit
from crowdfund.accounts.models import Role
from crowdfund.errors import Conflict
from crowdfund.mail.outbox import EmailStatus, count_lost_emails, email_counts, failed_emails
from crowdfund.outbox.running import retry_failed_task
from crowdfund.outbox.status import (
    count_lost,
    counts_by_kind,
    pending_due_soonest,
    running_tasks,
    tasks_of_status,
)
from crowdfund.outbox.tasks import OutboxTask, TaskStatus
from crowdfund.site.forms.accounts import EmptyForm
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, now, role_required, user

jobs_admin_bp = Blueprint("jobs_admin", __name__, url_prefix="/admin/jobs")

#: Rows per list on the page (each list is newest or soonest first).
LIST_LIMIT = 50


@dataclass(frozen=True)
class CountsLine:
    """One line of the counts table: a kind of task, or e-mail."""

    name: str
    pending: int
    running: int
    failed: int
    done: int
    #: Rows that took more than one attempt.
    retried: int


@dataclass(frozen=True)
class RunningLine:
    task: OutboxTask
    started_at: datetime
    running_for: str
    lease_lapses_at: datetime
    #: Its worker's lease has lapsed: that worker died, the sweep hands the row on.
    lapsed: bool


def duration_text(delta: timedelta) -> str:
    """ "45 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return f"{minutes} min"
    if seconds < 86400:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def _counts_lines() -> list[CountsLine]:
    lines = [
        CountsLine(
            k.kind,
            k.counts[TaskStatus.PENDING],
            k.counts[TaskStatus.RUNNING],
            k.counts[TaskStatus.FAILED],
            k.counts[TaskStatus.DONE],
            k.retried,
        )
        for k in counts_by_kind(db())
    ]
    mail, mail_retried = email_counts(db())
    lines.append(
        CountsLine(
            "e-mail",
            mail[EmailStatus.PENDING],
            mail[EmailStatus.SENDING],
            mail[EmailStatus.FAILED],
            mail[EmailStatus.SENT],
            mail_retried,
        )
    )
    return lines


@jobs_admin_bp.route("")
@role_required(Role.ADMIN)
def overview() -> Any:
    at = now()
    sweep = timedelta(seconds=current_app.config["OUTBOX_SWEEP_SECONDS"])
    running = [
        RunningLine(
            r.task, r.started_at, duration_text(at - r.started_at), r.lease_lapses_at, r.lease_lapses_at <= at
        )
        for r in running_tasks(db(), limit=LIST_LIMIT)
    ]
    lost = {"tasks": count_lost(db(), at, after=sweep), "emails": count_lost_emails(db(), at, after=sweep)}
    return render_template(
        "admin/jobs.html",
        counts=_counts_lines(),
        failed=tasks_of_status(db(), TaskStatus.FAILED, limit=LIST_LIMIT),
        running=running,
        pending=pending_due_soonest(db(), limit=LIST_LIMIT),
        failed_mail=failed_emails(db(), limit=LIST_LIMIT),
        lost=lost,
        any_lost=any(lost.values()),
        sweep_text=duration_text(sweep),
        limit=LIST_LIMIT,
        form=EmptyForm(),
    )


@jobs_admin_bp.route("/tasks/<int:task_id>/retry", methods=["POST"])
@role_required(Role.ADMIN)
def retry_task(task_id: int) -> Any:
    if not EmptyForm().validate_on_submit():
        abort(400)
    task = db().get(OutboxTask, task_id)
    if task is None:
        abort(404)
    kind, status = task.kind, task.status
    back = url_for("jobs_admin.overview")
    with on_error(redirect_to=back):
        if not retry_failed_task(db(), task_id, now=now()):
            raise Conflict(f"Task {task_id} ({kind}) is {status}, not failed: nothing was retried.")
        audit.record(
            db(),
            action="task.retry",
            object_type="outbox_task",
            object_id=task_id,
            now=now(),
            actor=user(),
            before={"status": "failed"},
            after={"status": "pending"},
            detail=kind,
        )
    flash(f"Task {task_id} ({kind}) will run again.", "success")
    return redirect(back, 303)

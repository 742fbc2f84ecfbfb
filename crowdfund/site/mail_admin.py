"""Admin: e-mails that could not be built or sent, and putting one back to be sent."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from crowdfund import audit
from crowdfund.accounts.models import Role
from crowdfund.errors import Conflict
from crowdfund.mail.outbox import OutgoingEmail, count_failed_emails, failed_emails, retry_failed_email
from crowdfund.site.forms.accounts import EmptyForm
from crowdfund.site.web import db, now, role_required, user

mail_admin_bp = Blueprint("mail_admin", __name__, url_prefix="/admin/mail")


@mail_admin_bp.app_template_global()
def failed_email_count() -> int:
    """For the admin dashboard's link."""
    return count_failed_emails(db())


@mail_admin_bp.route("")
@role_required(Role.ADMIN)
def failed() -> Any:
    return render_template("admin/mail.html", emails=failed_emails(db()), form=EmptyForm())


@mail_admin_bp.route("/<int:email_id>/retry", methods=["POST"])
@role_required(Role.ADMIN)
def retry(email_id: int) -> Any:
    if not EmptyForm().validate_on_submit():
        abort(400)
    email = db().get(OutgoingEmail, email_id)
    if email is None:
        abort(404)
    to_address = email.to_address
    if not retry_failed_email(db(), email_id):
        raise Conflict("This e-mail cannot be sent again: it is not failed, or it could not be built at all.")
    audit.record(
        db(),
        action="email.retry",
        object_type="email",
        object_id=email_id,
        now=now(),
        actor=user(),
        before={"status": "failed"},
        after={"status": "pending"},
        detail=to_address,
    )
    flash(f"The e-mail to {to_address} will be sent again.", "success")
    # The "Jobs and mail" page posts here too, and gets its page back.
    back = "jobs_admin.overview" if request.form.get("back") == "jobs" else "mail_admin.failed"
    return redirect(url_for(back), 303)

"""Admin pages: the dashboard, users and their roles and studio, studios, the audit log."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import func, or_, select
from wtforms.fields.choices import SelectChoice

from crowdfund import audit
from crowdfund.accounts import (
    roles,
)
from crowdfund.accounts import (
    studios as account_studios,
)
from crowdfund.accounts.audit_log import AuditFilter, search_audit_log
from crowdfund.accounts.models import Role, Studio, User
from crowdfund.errors import DomainError
from crowdfund.films.services import films_in_review
from crowdfund.site.forms.accounts import (
    EmptyForm,
    RoleForm,
    StudioForm,
    StudioMembershipForm,
)
from crowdfund.site.params import date_arg, int_arg
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, now, role_required, user

admin_bp = Blueprint("admin", __name__, url_prefix="/admin")


@admin_bp.route("/")
@role_required(Role.ADMIN)
def dashboard() -> Any:
    counts = {
        "users": db().scalar(select(func.count()).select_from(User)),
        "studios": db().scalar(select(func.count()).select_from(Studio)),
    }
    return render_template("admin/dashboard.html", counts=counts, in_review=films_in_review(db()))


@admin_bp.route("/users")
@role_required(Role.ADMIN)
def users() -> Any:
    query = request.args.get("q", "").strip()[:100]
    statement = select(User).order_by(User.created_at.desc()).limit(200)
    if query:
        like = f"%{query.lower()}%"
        statement = statement.where(or_(User.email.like(like), func.lower(User.display_name).like(like)))
    return render_template("admin/users.html", users=list(db().scalars(statement)), query=query)


def _membership_form(account: User) -> StudioMembershipForm:
    form = StudioMembershipForm(prefix="membership")
    studios = db().scalars(select(Studio).order_by(Studio.name))
    form.studio_id.choices = [SelectChoice("0", "No studio")] + [
        SelectChoice(str(s.id), s.name) for s in studios
    ]
    if request.method == "GET":
        form.studio_id.data = account.studio_id or 0
    return form


@admin_bp.route("/users/<int:user_id>")
@role_required(Role.ADMIN)
def user_detail(user_id: int) -> Any:
    account = db().get(User, user_id) or abort(404)
    return render_template(
        "admin/user.html",
        account=account,
        role_form=RoleForm(),
        membership_form=_membership_form(account),
        empty_form=EmptyForm(),
    )


@admin_bp.route("/users/<int:user_id>/roles", methods=["POST"])
@role_required(Role.ADMIN)
def change_role(user_id: int) -> Any:
    account = db().get(User, user_id) or abort(404)
    form = RoleForm()
    action = request.form.get("action")
    if not form.validate_on_submit() or action not in ("grant", "revoke"):
        flash("Choose a role to grant or remove.", "error")
        return redirect(url_for("admin.user_detail", user_id=user_id)), 303
    back = url_for("admin.user_detail", user_id=user_id)
    with on_error(redirect_to=back):
        if action == "grant":
            roles.grant_role(db(), account, form.role.data, acting_user=user(), now=now())
        else:
            roles.revoke_role(db(), account, form.role.data, acting_user=user(), now=now())
    verb = "granted to" if action == "grant" else "removed from"
    flash(f"Role {form.role.data} {verb} {account.email}.", "success")
    return redirect(back, 303)


@admin_bp.route("/users/<int:user_id>/studio", methods=["POST"])
@role_required(Role.ADMIN)
def change_studio(user_id: int) -> Any:
    account = db().get(User, user_id) or abort(404)
    form = _membership_form(account)
    if not form.validate_on_submit():
        flash("Choose a studio.", "error")
        return redirect(url_for("admin.user_detail", user_id=user_id), 303)
    studio = account_studios.get_studio(db(), form.studio_id.data) if form.studio_id.data else None
    account_studios.set_studio(db(), account, studio, acting_user=user(), now=now())
    flash(f"{account.email} is now {'a member of ' + studio.name if studio else 'in no studio'}.", "success")
    return redirect(url_for("admin.user_detail", user_id=user_id), 303)


@admin_bp.route("/studios", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def studios() -> Any:
    form = StudioForm()

    def page() -> Any:
        all_studios = list(db().scalars(select(Studio).order_by(Studio.name)))
        return render_template(
            "admin/studios.html", form=form, studios=all_studios
        ), 400 if form.errors else 200

    def refused(exc: DomainError) -> Any:
        form.name.errors.append(exc.message)
        return page()

    if form.validate_on_submit():
        with on_error(respond=refused):
            studio = account_studios.create_studio(db(), form.name.data)
        flash(f"Studio {studio.name} created.", "success")
        return redirect(url_for("admin.studios"), 303)
    return page()


@admin_bp.route("/audit")
@role_required(Role.ADMIN)
def audit_log() -> Any:
    args = request.args
    page = int_arg("page", 1, 1, 100_000)
    since, until = date_arg("since"), date_arg("until")

    filters = AuditFilter(
        action=args.get("action", "")[:64],
        actor_email=args.get("actor", "")[:254],
        object_type=args.get("object_type", "")[:32],
        object_id=args.get("object_id", "")[:64],
        since=since,
        until=until,
    )
    events, has_next = search_audit_log(db(), filters, page)
    return render_template(
        "admin/audit.html",
        events=events,
        filters=filters,
        page=page,
        has_next=has_next,
        actions=audit.actions(db()),
    )

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import login_user, logout_user
from sqlalchemy import func, or_, select
from wtforms.fields.choices import SelectChoice

from crowdfund.accounts import services
from crowdfund.accounts.forms import EmptyForm, LogInForm, RoleForm, SignUpForm, StudioForm, StudioMembershipForm
from crowdfund.accounts.models import Role, Studio, User
from crowdfund.errors import DomainError
from crowdfund.web import db, is_safe_next, login_required, role_required, user

bp = Blueprint("accounts", __name__)
admin_bp = Blueprint("admin", __name__, url_prefix="/admin")


def home_for(account: User) -> str:
    """Each kind of user lands on their own home page."""
    if account.has_role(Role.ADMIN):
        return url_for("admin.dashboard")
    if account.has_role(Role.FINANCE):
        return url_for("finance.dashboard")
    if account.has_role(Role.STUDIO):
        return url_for("studio.dashboard")
    return url_for("funding.portfolio_page")


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> Any:
    form = SignUpForm()
    if form.validate_on_submit():
        try:
            account = services.sign_up(db(), form.email.data, form.password.data, form.display_name.data)
            db().commit()
        except DomainError as exc:
            db().rollback()
            getattr(form, exc.field or "email").errors.append(exc.message)
        else:
            login_user(account)
            flash("Welcome! Your account is ready.", "success")
            return redirect(url_for("catalogue.home"))
    return render_template("accounts/signup.html", form=form), 400 if form.errors else 200


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LogInForm()
    if form.validate_on_submit():
        account = services.authenticate(db(), form.email.data, form.password.data)
        if account is None:
            # One message whether or not the e-mail exists.
            form.password.errors.append("That e-mail and password do not match an account.")
        else:
            login_user(account, remember=form.remember.data)
            next_url = request.args.get("next")
            return redirect(next_url if is_safe_next(next_url) else home_for(account))
    return render_template("accounts/login.html", form=form), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    if EmptyForm().validate_on_submit():
        logout_user()
        flash("You are logged out.", "info")
    return redirect(url_for("catalogue.home"))


@bp.route("/account")
@login_required
def my_account() -> Any:
    return render_template("accounts/account.html", account=user())


@bp.route("/home")
@login_required
def home() -> Any:
    return redirect(home_for(user()))


# --- admin: users, roles, studios -------------------------------------------------


@admin_bp.route("/")
@role_required(Role.ADMIN)
def dashboard() -> Any:
    from crowdfund.films.services import films_in_review

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
    form.studio_id.choices = [SelectChoice("0", "No studio")] + [SelectChoice(str(s.id), s.name) for s in studios]
    if request.method == "GET":
        form.studio_id.data = account.studio_id or 0
    return form


@admin_bp.route("/users/<int:user_id>")
@role_required(Role.ADMIN)
def user_detail(user_id: int) -> Any:
    account = db().get(User, user_id) or abort(404)
    return render_template(
        "admin/user.html", account=account, role_form=RoleForm(), membership_form=_membership_form(account),
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
    try:
        if action == "grant":
            services.grant_role(db(), account, form.role.data)
        else:
            services.revoke_role(db(), account, form.role.data, acting_user=user())
        db().commit()
    except DomainError as exc:
        db().rollback()
        flash(exc.message, "error")
    else:
        verb = "granted to" if action == "grant" else "removed from"
        flash(f"Role {form.role.data} {verb} {account.email}.", "success")
    return redirect(url_for("admin.user_detail", user_id=user_id), 303)


@admin_bp.route("/users/<int:user_id>/studio", methods=["POST"])
@role_required(Role.ADMIN)
def change_studio(user_id: int) -> Any:
    account = db().get(User, user_id) or abort(404)
    form = _membership_form(account)
    if not form.validate_on_submit():
        flash("Choose a studio.", "error")
        return redirect(url_for("admin.user_detail", user_id=user_id), 303)
    studio = services.get_studio(db(), form.studio_id.data) if form.studio_id.data else None
    services.set_studio(db(), account, studio)
    db().commit()
    flash(f"{account.email} is now {'a member of ' + studio.name if studio else 'in no studio'}.", "success")
    return redirect(url_for("admin.user_detail", user_id=user_id), 303)


@admin_bp.route("/studios", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def studios() -> Any:
    form = StudioForm()
    if form.validate_on_submit():
        try:
            studio = services.create_studio(db(), form.name.data)
            db().commit()
        except DomainError as exc:
            db().rollback()
            form.name.errors.append(exc.message)
        else:
            flash(f"Studio {studio.name} created.", "success")
            return redirect(url_for("admin.studios"), 303)
    all_studios = list(db().scalars(select(Studio).order_by(Studio.name)))
    return render_template("admin/studios.html", form=form, studios=all_studios), 400 if form.errors else 200

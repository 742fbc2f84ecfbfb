"""The studio's pages: dashboard, film create/edit, the round's actions, backers CSV."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from crowdfund.accounts.models import Role
from crowdfund.errors import DomainError
from crowdfund.films import services
from crowdfund.films.states import FilmState
from crowdfund.funding.queries import funding_stats
from crowdfund.money import format_cents_plain
from crowdfund.reports.csvutil import stream_csv
from crowdfund.reports.queries import backer_rows
from crowdfund.site.forms.accounts import EmptyForm
from crowdfund.site.forms.films import FilmForm
from crowdfund.site.studio_page import render_studio_film
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, now, role_required, stream_query, user

studio_bp = Blueprint("studio", __name__, url_prefix="/studio")


# --- studio -------------------------------------------------------------------------


@studio_bp.route("/")
@role_required(Role.STUDIO)
def dashboard() -> Any:
    films = services.studio_films(db(), user().studio_id)
    stats = funding_stats(db(), [f.id for f in films])
    return render_template("studio/dashboard.html", films=films, stats=stats, studio=user().membership.studio)


def _poster_bytes(form: FilmForm) -> bytes | None:
    upload = form.poster.data
    if upload is None or not getattr(upload, "filename", ""):
        return None
    return upload.read(current_app.config["POSTER_MAX_BYTES"] + 1)


def _apply_problems(form: FilmForm, exc: DomainError) -> None:
    problems = getattr(exc, "problems", None) or {exc.field or "title": exc.message}
    for field_name, message in problems.items():
        field = getattr(form, field_name, None)
        if field is not None:
            field.errors = list(field.errors) + [message]
        else:
            flash(message, "error")


def _refused(form: FilmForm, exc: DomainError, page: Callable[[], Any]) -> Any:
    """The form again, with the service's problems beside their fields (after the rollback)."""
    _apply_problems(form, exc)
    return page()


@studio_bp.errorhandler(413)
def _upload_too_large(exc: Exception) -> Any:
    """A body over MAX_CONTENT_LENGTH is refused before it is read, so its fields
    are lost: the film form comes back (a draft's saved values when editing)
    with the poster's limit, instead of a bare error page."""
    limit_mb = current_app.config["POSTER_MAX_BYTES"] // (1024 * 1024)
    message = f"The poster is too large: at most {limit_mb} MB. Nothing was saved; choose a smaller image."
    if (
        request.endpoint in ("studio.new_film", "studio.edit_film")
        and current_user.is_authenticated
        and current_user.has_role(Role.STUDIO)
    ):
        film = None
        form = FilmForm(formdata=None)
        if request.endpoint == "studio.edit_film":
            try:
                film = services.studio_film(db(), user(), int((request.view_args or {}).get("film_id", 0)))
            except DomainError as not_theirs:
                return render_template(
                    "errors/error.html",
                    status=not_theirs.status_code,
                    title="Not found",
                    message=not_theirs.message,
                ), not_theirs.status_code
            form.fill_from(film)
        form.poster.errors = [message]
        return render_template("studio/film_form.html", form=form, film=film), 413
    return render_template(
        "errors/error.html", status=413, title="Request Entity Too Large", message="The upload is too large."
    ), 413


@studio_bp.route("/films/new", methods=["GET", "POST"])
@role_required(Role.STUDIO)
def new_film() -> Any:
    form = FilmForm()

    def page() -> Any:
        return render_template("studio/film_form.html", form=form, film=None), 400 if form.errors else 200

    if form.validate_on_submit():
        with on_error(respond=lambda exc: _refused(form, exc, page)):
            film = services.create_film(
                db(),
                user(),
                form.to_input(),
                poster=_poster_bytes(form),
                poster_max_bytes=current_app.config["POSTER_MAX_BYTES"],
            )
        flash("Draft saved. Submit it for review when it is ready.", "success")
        return redirect(url_for("studio.film_detail", film_id=film.id), 303)
    return page()


@studio_bp.route("/films/<int:film_id>")
@role_required(Role.STUDIO)
def film_detail(film_id: int) -> Any:
    return render_studio_film(services.studio_film(db(), user(), film_id))


@studio_bp.route("/films/<int:film_id>/backers.csv")
@role_required(Role.STUDIO)
def backers_csv(film_id: int) -> Any:
    film = services.studio_film(db(), user(), film_id)
    rows = (
        (name, email, units, format_cents_plain(cents))
        for name, email, units, cents in stream_query(backer_rows, film.id)
    )
    response = Response(stream_csv(["name", "email", "stakes", "amount_usd"], rows), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{film.slug}-backers.csv"'
    return response


@studio_bp.route("/films/<int:film_id>/edit", methods=["GET", "POST"])
@role_required(Role.STUDIO)
def edit_film(film_id: int) -> Any:
    film = services.studio_film(db(), user(), film_id)
    if film.state != FilmState.DRAFT:
        flash("Only drafts can be edited.", "error")
        return redirect(url_for("studio.film_detail", film_id=film.id), 303)
    form = FilmForm()

    def page() -> Any:
        # After a refusal the film is read again: the draft as saved, not as the refused edit left it.
        return render_template("studio/film_form.html", form=form, film=film), 400 if form.errors else 200

    if request.method == "GET":
        form.fill_from(film)
    elif form.validate_on_submit():
        with on_error(respond=lambda exc: _refused(form, exc, page)):
            services.update_film(
                db(),
                film,
                form.to_input(),
                poster=_poster_bytes(form),
                poster_max_bytes=current_app.config["POSTER_MAX_BYTES"],
            )
        flash("Draft saved.", "success")
        return redirect(url_for("studio.film_detail", film_id=film.id), 303)
    return page()


def _studio_action(film_id: int, action: Any, success: str) -> Any:
    film = services.studio_film(db(), user(), film_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    film_page = url_for("studio.film_detail", film_id=film.id)
    # FilmChanged: moved by someone else since this request read it: a 409 page says so.
    with on_error(redirect_to=film_page, passing=(services.FilmChanged,)):
        action(db(), film, user(), now=now())
    flash(success, "success")
    return redirect(film_page, 303)


@studio_bp.route("/films/<int:film_id>/submit", methods=["POST"])
@role_required(Role.STUDIO)
def submit_film(film_id: int) -> Any:
    return _studio_action(
        film_id, services.submit_for_review, "Submitted for review. An admin will look at it soon."
    )


@studio_bp.route("/films/<int:film_id>/withdraw", methods=["POST"])
@role_required(Role.STUDIO)
def withdraw_film(film_id: int) -> Any:
    return _studio_action(film_id, services.withdraw, "The film was withdrawn.")


@studio_bp.route("/films/<int:film_id>/release", methods=["POST"])
@role_required(Role.STUDIO)
def release_film(film_id: int) -> Any:
    return _studio_action(film_id, services.mark_released, "The film is marked released.")


@studio_bp.route("/films/<int:film_id>/close", methods=["POST"])
@role_required(Role.STUDIO)
def close_film(film_id: int) -> Any:
    return _studio_action(
        film_id, services.close_film, "The film is closed: it accepts no more box-office reports."
    )

"""Admin review: the queue, approve, send back, cancel."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    url_for,
)

from crowdfund.accounts.models import Role
from crowdfund.errors import DomainError
from crowdfund.films import services
from crowdfund.films.terms import film_terms
from crowdfund.rewards.tiers import film_tiers
from crowdfund.site.forms.accounts import EmptyForm
from crowdfund.site.forms.films import SendBackForm
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, now, role_required, user
from crowdfund.workflows.reactions import approve_film, cancel_film

review_bp = Blueprint("review", __name__, url_prefix="/admin/reviews")


# --- admin review -------------------------------------------------------------------


@review_bp.route("/")
@role_required(Role.ADMIN)
def queue() -> Any:
    return render_template(
        "admin/reviews.html", films=services.films_in_review(db()), all_films=services.all_films(db())
    )


@review_bp.route("/<int:film_id>", methods=["GET"])
@role_required(Role.ADMIN)
def review(film_id: int) -> Any:
    return _review_page(services.film_by_id(db(), film_id))


def _review_page(film: Any, send_back_form: SendBackForm | None = None, status: int = 200) -> Any:
    return render_template(
        "admin/review.html",
        film=film,
        terms=film_terms(film),
        tiers=film_tiers(db(), film.id),
        approve_form=EmptyForm(prefix="approve"),
        send_back_form=send_back_form or SendBackForm(prefix="back"),
        cancel_form=SendBackForm(prefix="cancel"),
    ), status


@review_bp.route("/<int:film_id>/cancel", methods=["POST"])
@role_required(Role.ADMIN)
def cancel(film_id: int) -> Any:
    film = services.film_by_id(db(), film_id)
    form = SendBackForm(prefix="cancel")
    review_page = url_for("review.review", film_id=film.id)
    if form.validate_on_submit():
        with on_error(redirect_to=review_page, passing=(services.FilmChanged,)):
            cancel_film(db(), film, user(), form.reason.data, now=now())
        flash(f"{film.title} is cancelled. Its backers' refunds are on their way.", "success")
        return redirect(review_page, 303)
    flash("Say why the film is cancelled.", "error")
    return redirect(review_page, 303)


@review_bp.route("/<int:film_id>/approve", methods=["POST"])
@role_required(Role.ADMIN)
def approve(film_id: int) -> Any:
    film = services.film_by_id(db(), film_id)
    if not EmptyForm(prefix="approve").validate_on_submit():
        abort(400)

    def refused(exc: DomainError) -> Any:
        flash(exc.message, "error")
        if exc.status_code == 403:  # not this admin's to approve: say so on the page, with the status
            return _review_page(services.film_by_id(db(), film_id), status=403)
        return redirect(url_for("review.review", film_id=film_id), 303)

    # FilmChanged: moved by someone else since this request read it: a 409 page says so.
    with on_error(respond=refused, passing=(services.FilmChanged,)):
        approve_film(db(), film, user(), now=now())
    flash(f"{film.title} is open for funding.", "success")
    return redirect(url_for("review.queue"), 303)


@review_bp.route("/<int:film_id>/send-back", methods=["POST"])
@role_required(Role.ADMIN)
def send_back(film_id: int) -> Any:
    film = services.film_by_id(db(), film_id)
    form = SendBackForm(prefix="back")

    def refused(exc: DomainError) -> Any:
        flash(exc.message, "error")
        return _review_page(film, form, 400)

    if form.validate_on_submit():
        # FilmChanged: moved by someone else since this request read it: a 409 page says so.
        with on_error(respond=refused, passing=(services.FilmChanged,)):
            services.send_back(db(), film, user(), form.reason.data, now=now())
        flash(f"{film.title} went back to the studio.", "success")
        return redirect(url_for("review.queue"), 303)
    return _review_page(film, form, 400)

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from crowdfund.site.forms.accounts import EmptyForm
from crowdfund.accounts.models import Role
from crowdfund.errors import DomainError
from crowdfund.films import services
from crowdfund.site.forms.films import FilmForm, SendBackForm
from crowdfund.films.states import FilmState
from crowdfund.films.terms import PLATFORM_RISKS, describe_terms
from crowdfund.funding.queries import funding_stats, paid_total, paid_units_and_backers, refund_progress
from crowdfund.site.funding import buy_panel_context
from crowdfund.charts import line_chart
from crowdfund.money import format_cents, format_cents_plain, parse_amount
from crowdfund.params import int_arg
from crowdfund.payouts.calculator import backer_return, curve
from crowdfund.payouts.services import terms_of
from crowdfund.reports.csvutil import stream_csv
from crowdfund.rewards.services import film_tiers, tier_reached
from crowdfund.reports.queries import backer_rows, raised_by_day
from crowdfund.uploads import IMAGE_TYPES, StoredFile
from crowdfund.site.web import db, now, role_required, stream_query, user

catalogue_bp = Blueprint("catalogue", __name__)
studio_bp = Blueprint("studio", __name__, url_prefix="/studio")
review_bp = Blueprint("review", __name__, url_prefix="/admin/reviews")

SECTIONS = {
    "funding": ("Open for funding", (FilmState.FUNDING,)),
    "funded": ("Funded", (FilmState.FUNDED,)),
    "released": ("Released", (FilmState.RELEASED, FilmState.CLOSED)),
}


def _page_number() -> int:
    return int_arg("page", 1, 1, 100_000)


def _terms(film: Any) -> list[str]:
    return describe_terms(
        film.recoup_share_bps, film.recoup_multiple_bps, film.profit_share_bps, film.funding_goal_cents
    )


# --- public catalogue ---------------------------------------------------------------


@catalogue_bp.route("/")
def home() -> Any:
    return _section("funding")


@catalogue_bp.route("/films")
def films() -> Any:
    section = request.args.get("section", "funding")
    if section not in SECTIONS:
        abort(404)
    return _section(section)


def _section(section: str) -> Any:
    title, states = SECTIONS[section]
    page = services.catalogue_page(db(), states, _page_number())
    if page.page > page.pages:
        abort(404)
    stats = funding_stats(db(), [f.id for f in page.items])
    return render_template(
        "films/catalogue.html", page=page, stats=stats, section=section, title=title, sections=SECTIONS
    )


@catalogue_bp.route("/films/<slug>")
def film_page(slug: str) -> Any:
    viewer = current_user if current_user.is_authenticated else None
    film = services.visible_film(db(), slug[:140], viewer)
    stats = funding_stats(db(), [film.id])[film.id]
    buy = buy_panel_context(film, viewer) if film.state == FilmState.FUNDING else None
    tiers = film_tiers(db(), film.id)
    if buy is not None and tiers:
        # The first option (one stake) is selected; static/js/tiers.js follows the select.
        buy["reach"] = tier_reached(tiers, buy["paid"] + 1)
    tier_data = [{"min": t.min_stakes, "tickets": t.tickets, "extras": t.extras} for t in tiers]
    return render_template(
        "films/film.html", film=film, stats=stats, terms=_terms(film), platform_risks=PLATFORM_RISKS, buy=buy,
        tiers=tiers, tier_data=tier_data, calculator=_calculator(film), outcome=_outcome(film, viewer),
    )


def _outcome(film: Any, viewer: Any) -> dict[str, Any] | None:
    """The banner of a failed or cancelled film: what happened, and where the
    money is (the viewer's own refunds; all of them for the studio and admins)."""
    if film.state not in (FilmState.FAILED, FilmState.CANCELLED):
        return None
    staff = viewer is not None and (viewer.studio_id == film.studio_id or viewer.has_role("admin"))
    mine = refund_progress(db(), film.id, viewer.id) if viewer is not None and not staff else None
    return {
        "cancellation": services.cancellation(db(), film),
        "mine": mine if mine is not None and mine.orders else None,
        "all": refund_progress(db(), film.id) if staff else None,
    }


def _calculator(film: Any) -> dict[str, Any]:
    """The return calculator: the real waterfall on numbers the visitor picks.
    Before funding closes it assumes the film raises exactly its goal."""
    if film.state in (FilmState.FUNDING, FilmState.DRAFT, FilmState.IN_REVIEW):
        total_stakes = max(1, -(-film.funding_goal_cents // film.stake_price_cents))
        principal = total_stakes * film.stake_price_cents
    else:
        total_stakes, _ = paid_units_and_backers(db(), film.id)
        principal = paid_total(db(), film.id)
    if total_stakes == 0:
        return {"available": False}
    error: str | None
    try:
        receipts = parse_amount(request.args.get("receipts", "") or format_cents_plain(principal * 2))
    except ValueError:
        receipts, error = principal * 2, "Enter receipts in dollars, like 250000."
    else:
        error = None
    stakes = int_arg("stakes", 1, 1, total_stakes)
    terms = terms_of(film)
    scenario = backer_return(terms, principal_cents=principal, total_stakes=total_stakes, receipts_cents=receipts,
                             stakes=stakes)
    points = curve(terms, principal_cents=principal, total_stakes=total_stakes, stakes=stakes,
                   top_cents=max(receipts, principal * 4))
    chart = line_chart([(format_cents(p.receipts_cents).split(".")[0], p.amount_cents) for p in points],
                       f"Payout for {stakes} stake{'s' if stakes != 1 else ''} against net receipts", format_cents)
    return {"available": True, "scenario": scenario, "chart": chart, "error": error,
            "receipts_text": format_cents_plain(receipts), "assumes_goal": film.state == FilmState.FUNDING}


@catalogue_bp.route("/files/<int:file_id>")
def stored_file(file_id: int) -> Any:
    stored = db().get(StoredFile, file_id) or abort(404)
    # Public, so only posters: PNG or JPEG as uploads.check_image decided from the
    # content. Any other stored file (a box-office PDF or CSV) is not public: it
    # is served by payouts.report_file after its access check, never from here.
    if stored.content_type not in IMAGE_TYPES.values():
        abort(404)
    # A draft's poster is as private as the draft: only its studio and admins see it.
    viewer = current_user if current_user.is_authenticated else None
    if not services.poster_visible(db(), stored.id, viewer):
        abort(404)
    response = make_response(stored.data)
    response.headers["Content-Type"] = stored.content_type
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


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


@studio_bp.errorhandler(413)
def _upload_too_large(exc: Exception) -> Any:
    """A body over MAX_CONTENT_LENGTH is refused before it is read, so its fields
    are lost: the film form comes back (a draft's saved values when editing)
    with the poster's limit, instead of a bare error page."""
    limit_mb = current_app.config["POSTER_MAX_BYTES"] // (1024 * 1024)
    message = f"The poster is too large: at most {limit_mb} MB. Nothing was saved; choose a smaller image."
    if (request.endpoint in ("studio.new_film", "studio.edit_film") and current_user.is_authenticated
            and current_user.has_role(Role.STUDIO)):
        film = None
        form = FilmForm(formdata=None)
        if request.endpoint == "studio.edit_film":
            try:
                film = services.studio_film(db(), user(), int((request.view_args or {}).get("film_id", 0)))
            except DomainError as not_theirs:
                return render_template("errors/error.html", status=not_theirs.status_code, title="Not found",
                                       message=not_theirs.message), not_theirs.status_code
            form.fill_from(film)
        form.poster.errors = [message]
        return render_template("studio/film_form.html", form=form, film=film), 413
    return render_template("errors/error.html", status=413, title="Request Entity Too Large",
                           message="The upload is too large."), 413


@studio_bp.route("/films/new", methods=["GET", "POST"])
@role_required(Role.STUDIO)
def new_film() -> Any:
    form = FilmForm()
    if form.validate_on_submit():
        try:
            film = services.create_film(
                db(), user(), form.to_input(), poster=_poster_bytes(form),
                poster_max_bytes=current_app.config["POSTER_MAX_BYTES"],
            )
            db().commit()
        except DomainError as exc:
            db().rollback()
            _apply_problems(form, exc)
        else:
            flash("Draft saved. Submit it for review when it is ready.", "success")
            return redirect(url_for("studio.film_detail", film_id=film.id), 303)
    return render_template("studio/film_form.html", form=form, film=None), 400 if form.errors else 200


@studio_bp.route("/films/<int:film_id>")
@role_required(Role.STUDIO)
def film_detail(film_id: int) -> Any:
    return render_studio_film(services.studio_film(db(), user(), film_id))


def render_studio_film(film: Any, status: int = 200, tier_form: Any = None, screening_form: Any = None) -> Any:
    """The studio's film page; rewards forms come back here with their errors."""
    from crowdfund.site.rewards import studio_rewards_context

    stats = funding_stats(db(), [film.id])[film.id]
    points = [(day.strftime("%d %b"), cents) for day, cents in raised_by_day(db(), film.id)]
    chart = line_chart(points, "Raised over time", format_cents)
    rewards = studio_rewards_context(film, tier_form, screening_form)
    return render_template("studio/film.html", film=film, stats=stats, terms=_terms(film), form=EmptyForm(),
                           chart=chart, rewards=rewards), status


@studio_bp.route("/films/<int:film_id>/backers.csv")
@role_required(Role.STUDIO)
def backers_csv(film_id: int) -> Any:
    film = services.studio_film(db(), user(), film_id)
    rows = ((name, email, units, format_cents_plain(cents)) for name, email, units, cents in
            stream_query(backer_rows, film.id))
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
    if request.method == "GET":
        form.fill_from(film)
    elif form.validate_on_submit():
        try:
            services.update_film(
                db(), film, form.to_input(), poster=_poster_bytes(form),
                poster_max_bytes=current_app.config["POSTER_MAX_BYTES"],
            )
            db().commit()
        except DomainError as exc:
            db().rollback()
            _apply_problems(form, exc)
        else:
            flash("Draft saved.", "success")
            return redirect(url_for("studio.film_detail", film_id=film.id), 303)
    return render_template("studio/film_form.html", form=form, film=film), 400 if form.errors else 200


def _studio_action(film_id: int, action: Any, success: str) -> Any:
    film = services.studio_film(db(), user(), film_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        action(db(), film, user(), now=now())
        db().commit()
    except services.FilmChanged:
        # Moved by someone else since this request read it: a 409 page says so.
        db().rollback()
        raise
    except DomainError as exc:
        db().rollback()
        flash(exc.message, "error")
    else:
        flash(success, "success")
    return redirect(url_for("studio.film_detail", film_id=film.id), 303)


@studio_bp.route("/films/<int:film_id>/submit", methods=["POST"])
@role_required(Role.STUDIO)
def submit_film(film_id: int) -> Any:
    return _studio_action(film_id, services.submit_for_review, "Submitted for review. An admin will look at it soon.")


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
    return _studio_action(film_id, services.close_film, "The film is closed: it accepts no more box-office reports.")


# --- admin review -------------------------------------------------------------------


@review_bp.route("/")
@role_required(Role.ADMIN)
def queue() -> Any:
    return render_template("admin/reviews.html", films=services.films_in_review(db()),
                           all_films=services.all_films(db()))


@review_bp.route("/<int:film_id>", methods=["GET"])
@role_required(Role.ADMIN)
def review(film_id: int) -> Any:
    return _review_page(services.film_by_id(db(), film_id))


def _review_page(film: Any, send_back_form: SendBackForm | None = None, status: int = 200) -> Any:
    return render_template(
        "admin/review.html", film=film, terms=_terms(film), tiers=film_tiers(db(), film.id),
        approve_form=EmptyForm(prefix="approve"),
        send_back_form=send_back_form or SendBackForm(prefix="back"), cancel_form=SendBackForm(prefix="cancel"),
    ), status


@review_bp.route("/<int:film_id>/cancel", methods=["POST"])
@role_required(Role.ADMIN)
def cancel(film_id: int) -> Any:
    film = services.film_by_id(db(), film_id)
    form = SendBackForm(prefix="cancel")
    if form.validate_on_submit():
        try:
            services.cancel_film(db(), film, user(), form.reason.data, now=now())
            db().commit()
        except services.FilmChanged:
            # Moved by someone else since this request read it: a 409 page says so.
            db().rollback()
            raise
        except DomainError as exc:
            db().rollback()
            flash(exc.message, "error")
        else:
            flash(f"{film.title} is cancelled. Backers are refunded by the next round-close run.", "success")
        return redirect(url_for("review.review", film_id=film.id), 303)
    flash("Say why the film is cancelled.", "error")
    return redirect(url_for("review.review", film_id=film.id), 303)


@review_bp.route("/<int:film_id>/approve", methods=["POST"])
@role_required(Role.ADMIN)
def approve(film_id: int) -> Any:
    film = services.film_by_id(db(), film_id)
    if not EmptyForm(prefix="approve").validate_on_submit():
        abort(400)
    try:
        services.approve(db(), film, user(), now=now())
        db().commit()
    except services.FilmChanged:
        # Moved by someone else since this request read it: a 409 page says so.
        db().rollback()
        raise
    except DomainError as exc:
        db().rollback()
        flash(exc.message, "error")
        if exc.status_code == 403:  # not this admin's to approve: say so on the page, with the status
            return _review_page(services.film_by_id(db(), film_id), status=403)
        return redirect(url_for("review.review", film_id=film.id), 303)
    flash(f"{film.title} is open for funding.", "success")
    return redirect(url_for("review.queue"), 303)


@review_bp.route("/<int:film_id>/send-back", methods=["POST"])
@role_required(Role.ADMIN)
def send_back(film_id: int) -> Any:
    film = services.film_by_id(db(), film_id)
    form = SendBackForm(prefix="back")
    if form.validate_on_submit():
        try:
            services.send_back(db(), film, user(), form.reason.data, now=now())
            db().commit()
        except services.FilmChanged:
            # Moved by someone else since this request read it: a 409 page says so.
            db().rollback()
            raise
        except DomainError as exc:
            db().rollback()
            flash(exc.message, "error")
        else:
            flash(f"{film.title} went back to the studio.", "success")
            return redirect(url_for("review.queue"), 303)
    return _review_page(film, form, 400)

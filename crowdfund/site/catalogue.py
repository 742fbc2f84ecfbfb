"""The public catalogue: film lists, the film page, stored files."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    make_response,
    render_template,
    request,
)
from flask_login import current_user

from crowdfund.charts import line_chart
from crowdfund.films import services
from crowdfund.films.states import FilmState
from crowdfund.films.terms import PLATFORM_RISKS, film_terms
from crowdfund.funding.queries import (
    funding_stats,
    paid_total,
    paid_units_and_backers,
    poster_visible,
    refund_progress,
    visible_film,
)
from crowdfund.money import format_cents, format_cents_plain, parse_amount
from crowdfund.payouts.calculator import backer_return, curve
from crowdfund.payouts.runs import terms_of
from crowdfund.rewards.tiers import film_tiers, tier_reached
from crowdfund.site.buy_panel import buy_panel_context
from crowdfund.site.params import int_arg
from crowdfund.site.web import db
from crowdfund.uploads import IMAGE_TYPES, StoredFile

catalogue_bp = Blueprint("catalogue", __name__)

SECTIONS = {
    "funding": ("Open for funding", (FilmState.FUNDING,)),
    "funded": ("Funded", (FilmState.FUNDED,)),
    "released": ("Released", (FilmState.RELEASED, FilmState.CLOSED)),
}


def _page_number() -> int:
    return int_arg("page", 1, 1, 100_000)


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
    film = visible_film(db(), slug[:140], viewer)
    stats = funding_stats(db(), [film.id])[film.id]
    buy = buy_panel_context(film, viewer) if film.state == FilmState.FUNDING else None
    tiers = film_tiers(db(), film.id)
    if buy is not None and tiers:
        # The first option (one stake) is selected; static/js/tiers.js follows the select.
        buy["reach"] = tier_reached(tiers, buy["paid"] + 1)
    tier_data = [{"min": t.min_stakes, "tickets": t.tickets, "extras": t.extras} for t in tiers]
    return render_template(
        "films/film.html",
        film=film,
        stats=stats,
        terms=film_terms(film),
        platform_risks=PLATFORM_RISKS,
        buy=buy,
        tiers=tiers,
        tier_data=tier_data,
        calculator=_calculator(film),
        outcome=_outcome(film, viewer),
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
    scenario = backer_return(
        terms, principal_cents=principal, total_stakes=total_stakes, receipts_cents=receipts, stakes=stakes
    )
    points = curve(
        terms,
        principal_cents=principal,
        total_stakes=total_stakes,
        stakes=stakes,
        top_cents=max(receipts, principal * 4),
    )
    chart = line_chart(
        [(format_cents(p.receipts_cents).split(".")[0], p.amount_cents) for p in points],
        f"Payout for {stakes} stake{'s' if stakes != 1 else ''} against net receipts",
        format_cents,
    )
    return {
        "available": True,
        "scenario": scenario,
        "chart": chart,
        "error": error,
        "receipts_text": format_cents_plain(receipts),
        "assumes_goal": film.state == FilmState.FUNDING,
    }


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
    if not poster_visible(db(), stored.id, viewer):
        abort(404)
    response = make_response(stored.data)
    response.headers["Content-Type"] = stored.content_type
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response

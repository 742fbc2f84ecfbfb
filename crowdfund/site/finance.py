from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template
from sqlalchemy import select

from crowdfund import ledger
from crowdfund.accounts.models import Role
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order, PaymentAnomaly
from crowdfund.funding.queries import funding_stats
from crowdfund.reports.queries import film_money, reconciliation
from crowdfund.site.web import db, role_required

finance_bp = Blueprint("finance", __name__, url_prefix="/finance")


@finance_bp.route("/")
@role_required(Role.FINANCE, Role.ADMIN)
def dashboard() -> Any:
    films = list(
        db().scalars(
            select(Film)
            .where(Film.state.not_in([FilmState.DRAFT.value, FilmState.IN_REVIEW.value]))
            .order_by(Film.deadline.desc())
        )
    )
    # Money that reached Stripe for no order: newest first, refunded or not.
    anomalies = (
        db()
        .execute(
            select(PaymentAnomaly, Order.reference)
            .outerjoin(Order, Order.id == PaymentAnomaly.order_id)
            .order_by(PaymentAnomaly.detected_at.desc(), PaymentAnomaly.id.desc())
            .limit(200)
        )
        .all()
    )
    return render_template(
        "finance/dashboard.html",
        films=films,
        stats=funding_stats(db(), [f.id for f in films]),
        anomalies=anomalies,
    )


@finance_bp.route("/films/<int:film_id>")
@role_required(Role.FINANCE, Role.ADMIN)
def film_money_page(film_id: int) -> Any:
    film = db().get(Film, film_id) or abort(404)
    return render_template(
        "finance/film.html",
        film=film,
        money=film_money(db(), film),
        stats=funding_stats(db(), [film.id])[film.id],
    )


@finance_bp.route("/reconciliation")
@role_required(Role.FINANCE, Role.ADMIN)
def reconciliation_page() -> Any:
    rows = reconciliation(db())
    return render_template("finance/reconciliation.html", rows=rows, trial_balance=ledger.trial_balance(db()))

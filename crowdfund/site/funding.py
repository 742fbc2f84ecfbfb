from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from crowdfund.accounts.models import Role
from crowdfund.errors import DomainError, GatewayError
from crowdfund.funding import holds, queries
from crowdfund.funding.hold_statement import DuplicateRequest
from crowdfund.funding.hold_terms import hold_terms
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.funding.queries import paid_units_of_backer, portfolio
from crowdfund.funding.rules import STATUS_LABELS, CancellationNote, cancellation_deadline
from crowdfund.funding.rules import cancellation_note as _cancellation_note
from crowdfund.params import parse_int
from crowdfund.rewards.tiers import film_tiers, tier_reached
from crowdfund.site.extensions import rate_limit
from crowdfund.site.forms.accounts import EmptyForm
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, gateway, now, role_required, user
from crowdfund.workflows.checkout import checkout_setup_intent, pay_order
from crowdfund.workflows.reactions import cancel_order
from crowdfund.workflows.settle import PaymentResult

funding_bp = Blueprint("funding", __name__)


@funding_bp.app_template_global()
def order_status_label(status: str) -> str:
    return STATUS_LABELS.get(OrderStatus(status), status)


@funding_bp.app_template_global()
def cancellation_note(order: Any) -> CancellationNote:
    """What the checkout tells the buyer about cancelling, as of now."""
    return _cancellation_note(order.film.deadline, now(), pay_by=order.expires_at)


@funding_bp.route("/films/<slug>/hold", methods=["POST"])
@rate_limit("RATELIMIT_HOLD", key="user")
@role_required(Role.FAN)
def hold(slug: str) -> Any:
    # The flash-sale path: on launch day this runs hundreds of times a second per machine.
    session, fan = db(), user()
    if fan.email_verified_at is None:
        # Read with the user's row (load_user): no query. Throwaway accounts cannot hold stakes.
        film_path = url_for("catalogue.film_page", slug=slug[:140])
        return render_template("accounts/verify_needed.html", next_url=film_path, form=EmptyForm()), 403
    film = hold_terms(session, slug[:140], fan)
    units_raw = request.form.get("units", "")
    key = request.form.get("key", "")
    try:
        units = parse_int(units_raw, minimum=0, maximum=9_999_999)
    except ValueError:
        flash("Choose how many stakes to buy.", "error")
        return redirect(url_for("catalogue.film_page", slug=film.slug), 303)
    hold_request = holds.HoldRequest(film_id=film.id, units=units, idempotency_key=key)
    film_slug, fan_id = film.slug, fan.id  # as read before a rollback

    def refused(exc: DomainError) -> Any:
        # After the rollback: what the other request committed is visible now.
        if isinstance(exc, DuplicateRequest):
            other = queries.find_by_idempotency_key(db(), fan_id, key)
            if other is not None and other.units == hold_request.units:
                return redirect(url_for("funding.checkout", reference=other.reference), 303)
            # Never the order for another quantity: the other request is still at work.
            flash("This request is already being processed. Reload the page to see your hold.", "error")
        else:
            flash(exc.message, "error")
        return redirect(url_for("catalogue.film_page", slug=film_slug) + "#buy", 303)

    with on_error(respond=refused):
        order = holds.hold_stakes(
            session,
            fan,
            hold_request,
            now=now(),
            terms=film,
            hold_window=timedelta(minutes=current_app.config["HOLD_MINUTES"]),
        )
    return redirect(url_for("funding.checkout", reference=order.reference), 303)


@funding_bp.route("/orders/<reference>/release", methods=["POST"])
@role_required(Role.FAN)
def release(reference: str) -> Any:
    """The backer gives a hold back: its stakes are free for others at once."""
    order = queries.own_order(db(), user(), reference)
    if not EmptyForm().validate_on_submit():
        abort(400)
    with on_error(redirect_to=url_for("funding.order_page", reference=order.reference)):
        released = holds.release_hold(db(), order, user(), now=now())
    if released:
        flash(f"Your hold of {order.units} stake{'s' if order.units != 1 else ''} is released.", "success")
    else:
        flash("This hold was already released.", "info")
    return redirect(url_for("catalogue.film_page", slug=order.film.slug) + "#buy", 303)


@funding_bp.route("/orders/<reference>/checkout")
@rate_limit("RATELIMIT_CHECKOUT", key="user", methods=("GET",))
@role_required(Role.FAN)
def checkout(reference: str) -> Any:
    order = queries.own_order(db(), user(), reference)
    if order.status != OrderStatus.PENDING or order.stripe_payment_intent_id:
        return redirect(url_for("funding.order_page", reference=order.reference), 303)
    if order.expires_at <= now():
        flash("Your hold expired before payment. Please choose your stakes again.", "error")
        return redirect(url_for("catalogue.film_page", slug=order.film.slug), 303)
    reach = _tier_reach(order)

    def unavailable(exc: GatewayError) -> Any:
        return render_template(
            "funding/checkout.html",
            order=order,
            setup=None,
            error=str(exc),
            reach=reach,
        ), 503

    # The order's one SetupIntent, reused on reload (ends the read transaction before Stripe is asked).
    with on_error(GatewayError, respond=unavailable):
        setup = checkout_setup_intent(db(), order, gateway())
    return render_template(
        "funding/checkout.html",
        order=order,
        setup=setup,
        error=None,
        reach=reach,
    )


def _tier_reach(order: Any) -> Any:
    """The reward tier this order brings the backer to: their paid stakes plus this order."""
    tiers = film_tiers(db(), order.film_id)
    if not tiers:
        return None
    return tier_reached(tiers, paid_units_of_backer(db(), order.film_id, order.user_id) + order.units)


@funding_bp.route("/orders/<reference>/pay", methods=["POST"])
@role_required(Role.FAN)
def pay(reference: str) -> Any:
    order = queries.own_order(db(), user(), reference)
    if not EmptyForm().validate_on_submit():
        abort(400)
    setup_intent = (request.form.get("setup_intent") or "").strip()[:255] or None

    def unavailable(exc: GatewayError) -> Any:
        return _paid(
            order,
            PaymentResult(
                "pending",
                f"{exc} If your card was charged, your order completes by "
                "itself; you will not be charged twice.",
            ),
        )

    # pay_order commits its own steps around the calls to Stripe.
    with on_error(GatewayError, respond=unavailable):
        result = pay_order(db(), order, setup_intent, gateway(), now=now())
    return _paid(order, result)


def _paid(order: Order, result: PaymentResult) -> Any:
    """The page after a payment attempt."""
    if result.status == "paid":
        flash("Payment received. Thank you for backing this film!", "success")
        return redirect(url_for("funding.order_page", reference=order.reference), 303)
    if result.status == "requires_action":
        return render_template(
            "funding/checkout.html",
            order=order,
            setup=None,
            error=None,
            action_secret=result.client_secret,
            reach=_tier_reach(order),
        )
    flash(result.message, "error" if result.status in ("failed", "refunded") else "info")
    if result.status == "failed" and order.status != OrderStatus.PENDING:
        return redirect(url_for("catalogue.film_page", slug=order.film.slug) + "#buy", 303)
    return redirect(url_for("funding.order_page", reference=order.reference), 303)


@funding_bp.route("/orders/<reference>")
@role_required(Role.FAN)
def order_page(reference: str) -> Any:
    order = queries.own_order(db(), user(), reference)
    film = order.film
    return render_template(
        "funding/order.html",
        order=order,
        film=film,
        cancel_until=cancellation_deadline(film.deadline),
        form=EmptyForm(),
    )


@funding_bp.route("/orders/<reference>/cancel", methods=["POST"])
@role_required(Role.FAN)
def cancel(reference: str) -> Any:
    order = queries.own_order(db(), user(), reference)
    if not EmptyForm().validate_on_submit():
        abort(400)
    order_page_url = url_for("funding.order_page", reference=order.reference)
    with on_error(redirect_to=order_page_url):
        cancel_order(db(), order, user(), now=now())
    # The refund is an outbox row, carried out by a worker after this commits.
    flash("Order cancelled. Your refund is on its way to your card.", "success")
    return redirect(order_page_url, 303)


@funding_bp.route("/portfolio")
@role_required(Role.FAN)
def portfolio_page() -> Any:
    rows = portfolio(db(), user().id)
    return render_template("funding/portfolio.html", rows=rows)

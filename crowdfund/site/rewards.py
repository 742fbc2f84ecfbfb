"""Rewards pages: the backer's tickets, the studio's tiers and screenings, check-in."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import segno
from flask import Blueprint, Response, abort, flash, jsonify, redirect, render_template, request, url_for
from wtforms.fields.choices import SelectChoice

from config import BASE_DIR
from crowdfund.accounts.models import Role
from crowdfund.errors import Conflict, DomainError, NotFound
from crowdfund.films.services import studio_film
from crowdfund.funding.queries import paid_units_of_backer
from crowdfund.rewards import (
    bookings,
    tiers,
)
from crowdfund.rewards import (
    check_in as reward_check_in,
)
from crowdfund.rewards import (
    screenings as reward_screenings,
)
from crowdfund.rewards import (
    tickets as reward_tickets,
)
from crowdfund.rewards.models import Screening, Ticket, TicketStatus
from crowdfund.rewards.rules import STATUS_LABELS, TierInput, format_code
from crowdfund.site.extensions import rate_limit
from crowdfund.site.forms.accounts import EmptyForm
from crowdfund.site.forms.rewards import BookForm, CheckInForm, TierForm
from crowdfund.site.studio_page import render_studio_film, screening_form
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, now, role_required, user

rewards_bp = Blueprint("rewards", __name__)

TICKET_CSS = BASE_DIR / "static" / "css" / "ticket.css"


@rewards_bp.app_template_global()
def ticket_status_label(status: str) -> str:
    return STATUS_LABELS.get(TicketStatus(status), status)


@rewards_bp.app_template_filter("ticket_code")
def _ticket_code(code: str) -> str:
    return format_code(code)


def qr_data_uri(code: str) -> str:
    """The ticket's QR code as an SVG data URI: the same image on the page and in the PDF."""
    return segno.make(code, error="m").svg_data_uri(scale=6, border=2)


# --- the backer's tickets ---------------------------------------------------------------------


@rewards_bp.route("/tickets")
@role_required(Role.FAN)
def my_tickets() -> Any:
    tickets = reward_tickets.user_tickets(db(), user().id)
    by_film: dict[int, list[Ticket]] = {}
    for ticket in tickets:
        by_film.setdefault(ticket.film_id, []).append(ticket)
    return render_template(
        "rewards/tickets.html",
        by_film=by_film,
        qr={t.id: qr_data_uri(t.code) for t in tickets if t.status != TicketStatus.VOID},
    )


def _render_ticket(ticket: Ticket, form: BookForm | None = None, status: int = 200) -> Any:
    screenings = bookings.bookable_screenings(db(), ticket, now=now())
    stakes = paid_units_of_backer(db(), ticket.film_id, ticket.user_id)
    form = form or BookForm()
    form.screening_id.choices = [
        SelectChoice(
            str(s.id),
            f"{s.cinema}, {s.city}, {s.starts_at.astimezone(_zone(ticket)).strftime('%d %b %Y %H:%M %Z')}"
            f" ({s.seats_left} seats left)",
        )
        for s in screenings
        if s.min_tier is None or stakes >= s.min_tier.min_stakes
    ]
    locked = [s for s in screenings if s.min_tier is not None and stakes < s.min_tier.min_stakes]
    if ticket.screening_id and request.method == "GET":
        form.screening_id.data = ticket.screening_id
    return render_template(
        "rewards/ticket.html",
        ticket=ticket,
        qr=qr_data_uri(ticket.code),
        form=form,
        locked=locked,
        cancel_form=EmptyForm(prefix="unbook"),
    ), status


def _zone(ticket: Ticket) -> Any:
    return ZoneInfo(ticket.film.timezone)


@rewards_bp.route("/tickets/<int:ticket_id>")
@role_required(Role.FAN)
def ticket_page(ticket_id: int) -> Any:
    return _render_ticket(reward_tickets.own_ticket(db(), user(), ticket_id))


@rewards_bp.route("/tickets/<int:ticket_id>/book", methods=["POST"])
@role_required(Role.FAN)
def book(ticket_id: int) -> Any:
    ticket = reward_tickets.own_ticket(db(), user(), ticket_id)
    form = BookForm()
    if not form.validate_on_submit():
        flash("Choose a screening.", "error")
        return _render_ticket(ticket, form, 400)
    with on_error(respond=lambda exc: _ticket_refused(ticket_id, exc)):
        bookings.book_ticket(db(), user(), ticket.id, form.screening_id.data, now=now())
    flash("Booked. Show this ticket's QR code at the door.", "success")
    return redirect(url_for("rewards.ticket_page", ticket_id=ticket.id), 303)


@rewards_bp.route("/tickets/<int:ticket_id>/unbook", methods=["POST"])
@role_required(Role.FAN)
def unbook(ticket_id: int) -> Any:
    ticket = reward_tickets.own_ticket(db(), user(), ticket_id)
    if not EmptyForm(prefix="unbook").validate_on_submit():
        abort(400)
    with on_error(respond=lambda exc: _ticket_refused(ticket_id, exc)):
        bookings.cancel_booking(db(), user(), ticket.id, now=now())
    flash("Booking given up; your seat is free for someone else. Book another screening any time.", "success")
    return redirect(url_for("rewards.ticket_page", ticket_id=ticket.id), 303)


def _ticket_refused(ticket_id: int, exc: DomainError) -> Any:
    """The ticket's page again, read after the rollback, with the reason and the status."""
    flash(exc.message, "error")
    return _render_ticket(reward_tickets.own_ticket(db(), user(), ticket_id), status=exc.status_code)


@rewards_bp.route("/tickets/<int:ticket_id>/qr.svg")
@role_required(Role.FAN)
def ticket_qr(ticket_id: int) -> Any:
    ticket = reward_tickets.own_ticket(db(), user(), ticket_id)
    svg = segno.make(ticket.code, error="m").svg_inline(scale=6, border=2)
    response = Response(svg, mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@rewards_bp.route("/tickets/<int:ticket_id>/ticket.pdf")
@role_required(Role.FAN)
def ticket_pdf(ticket_id: int) -> Any:
    import weasyprint

    ticket = reward_tickets.own_ticket(db(), user(), ticket_id)
    html = render_template("rewards/ticket_pdf.html", ticket=ticket, qr=qr_data_uri(ticket.code))
    pdf = weasyprint.HTML(string=html).write_pdf(stylesheets=[weasyprint.CSS(filename=str(TICKET_CSS))])
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="ticket-{ticket.film.slug}-{ticket.id}.pdf"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


# --- studio: tiers and screenings -----------------------------------------------------------


def _show_error(form: Any, exc: DomainError, field_name: str | None) -> None:
    """Beside its field when the form is on the page, else as a message."""
    field = getattr(form, field_name or "", None)
    if field is not None and not isinstance(exc, Conflict):
        field.errors = list(field.errors) + [exc.message]
    else:
        flash(exc.message, "error")


def _back_to_film(film_id: int, refused: DomainError | None = None) -> Any:
    if refused is not None:
        flash(refused.message, "error")
    return redirect(url_for("studio.film_detail", film_id=film_id) + "#rewards", 303)


def _render_film(film: Any, **forms: Any) -> Any:
    return render_studio_film(film, status=400, **forms)


@rewards_bp.route("/studio/films/<int:film_id>/tiers", methods=["POST"])
@role_required(Role.STUDIO)
def add_tier(film_id: int) -> Any:
    film = studio_film(db(), user(), film_id)
    form = TierForm(prefix="tier")

    def refused(exc: DomainError) -> Any:
        _show_error(form, exc, "min_stakes")
        return _render_film(film, tier_form=form)

    if form.validate_on_submit():
        with on_error(respond=refused):
            tiers.add_tier(
                db(), film, TierInput(form.min_stakes.data, form.tickets.data, form.extras.data or "")
            )
        flash("Tier added.", "success")
        return _back_to_film(film.id)
    return _render_film(film, tier_form=form)


@rewards_bp.route("/studio/films/<int:film_id>/tiers/<int:tier_id>/delete", methods=["POST"])
@role_required(Role.STUDIO)
def delete_tier(film_id: int, tier_id: int) -> Any:
    film = studio_film(db(), user(), film_id)
    if not EmptyForm().validate_on_submit():
        abort(400)
    with on_error(respond=lambda exc: _back_to_film(film_id, exc), passing=(NotFound,)):
        tiers.remove_tier(db(), film, tier_id)
    flash("Tier removed.", "success")
    return _back_to_film(film.id)


@rewards_bp.route("/studio/films/<int:film_id>/screenings", methods=["POST"])
@role_required(Role.STUDIO)
def schedule(film_id: int) -> Any:
    film = studio_film(db(), user(), film_id)
    form = screening_form(film)

    def refused(exc: DomainError) -> Any:
        _show_error(form, exc, exc.field)
        return _render_film(film, screening_form=form)

    if form.validate_on_submit():
        with on_error(respond=refused):
            reward_screenings.schedule_screening(db(), film, form.to_input(film.timezone), now=now())
        flash("Screening scheduled. Backers can book it now.", "success")
        return _back_to_film(film.id)
    return _render_film(film, screening_form=form)


# --- check-in -------------------------------------------------------------------------------


def _render_check_in(screening: Screening, form: CheckInForm, result: Any = None, status: int = 200) -> Any:
    return render_template(
        "rewards/check_in.html",
        screening=screening,
        form=form,
        result=result,
        log=reward_check_in.check_in_log(db(), screening.id),
        attendance=reward_screenings.screening_attendance(db(), screening),
    ), status


@rewards_bp.route("/studio/screenings/<int:screening_id>/check-in", methods=["GET", "POST"])
@rate_limit("RATELIMIT_CHECK_IN", key="user")
@role_required(Role.STUDIO)
def check_in(screening_id: int) -> Any:
    screening = reward_screenings.studio_screening(db(), user(), screening_id)
    form = CheckInForm()
    if request.method == "GET":
        return _render_check_in(screening, form)
    if not form.validate_on_submit():
        return _render_check_in(screening, form, status=400)

    def refused(exc: DomainError) -> Any:
        form.code.errors = [exc.message]
        return _render_check_in(screening, form, status=exc.status_code)

    with on_error(respond=refused):
        result = reward_check_in.redeem_ticket(db(), user(), screening, form.code.data, now=now())
    # A fresh, empty form for the next person in the queue.
    return _render_check_in(screening, CheckInForm(formdata=None), result, 200 if result.admitted else 409)


@rewards_bp.route("/studio/screenings/<int:screening_id>/check-in.json", methods=["POST"])
@rate_limit("RATELIMIT_CHECK_IN", key="user")
@role_required(Role.STUDIO)
def check_in_json(screening_id: int) -> Any:
    """For door scanners logged in as studio staff; CSRF token in the X-CSRFToken header."""
    with on_error(respond=lambda exc: (jsonify(ok=False, result="not_found", message=exc.message), 404)):
        screening = reward_screenings.studio_screening(db(), user(), screening_id)
    payload = request.get_json(silent=True)
    code = payload.get("code") if isinstance(payload, dict) else None
    if not isinstance(code, str) or not code.strip() or len(code) > 64:
        return jsonify(
            ok=False, result="bad_request", message='Send JSON like {"code": "ABCDE-FGHJK-LMNPQ-RSTUV"}.'
        ), 400
    with on_error(
        respond=lambda exc: (jsonify(ok=False, result="bad_request", message=exc.message), exc.status_code)
    ):
        result = reward_check_in.redeem_ticket(db(), user(), screening, code, now=now())
    return jsonify(
        ok=result.admitted, result=result.result.value, message=result.message, screening_id=screening.id
    ), 200 if result.admitted else 409

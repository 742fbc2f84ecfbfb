"""What templates may show: the actions a user may take, as each domain's rules decide them.

Templates never compare state strings (tests/unit/test_template_decisions.py
keeps it so): they ask these globals, e.g.
`{% set actions = studio_actions(film) %}{% if "release" in actions %}`. Each
global hands the object, the clock and the viewer to a pure function of the
domain's rules, built from that machine's transition table; the services
still refuse a move the table does not allow.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from flask_login import current_user

from crowdfund.films import rules as films
from crowdfund.funding import rules as funding
from crowdfund.payouts import states as payouts
from crowdfund.rewards import rules as rewards
from crowdfund.site.web import now

actions_bp = Blueprint("actions", __name__)
global_ = actions_bp.app_template_global


def _viewer_studio_id() -> int | None:
    return current_user.studio_id if current_user.is_authenticated else None


def _viewer_id() -> int | None:
    return current_user.id if current_user.is_authenticated else None


# --- films ------------------------------------------------------------------------------------


@global_()
def studio_actions(film: Any) -> frozenset[films.FilmAction]:
    return films.studio_actions(film.state)


@global_()
def review_actions(film: Any) -> frozenset[films.FilmAction]:
    return films.review_actions(film.state, film.studio_id, _viewer_studio_id())


@global_()
def funding_time_left(film: Any) -> str | None:
    return films.funding_time_left(film.state, film.deadline, now())


@global_()
def funding_end_word(film: Any) -> str:
    return films.funding_end_word(film.state, film.deadline, now())


@global_()
def film_cancelled(film: Any) -> bool:
    return films.was_cancelled(film.state)


# --- funding ----------------------------------------------------------------------------------


@global_()
def order_actions(order: Any) -> frozenset[funding.OrderAction]:
    return funding.order_actions(order, order.film, now())


@global_()
def hold_lapsed(order: Any) -> bool:
    return funding.hold_phase(order, now()) is funding.HoldPhase.LAPSED


@global_()
def payment_under_way(order: Any) -> bool:
    return funding.hold_phase(order, now()) is funding.HoldPhase.PAYING


@global_()
def order_paid(order: Any) -> bool:
    return funding.is_paid(order.status)


@global_()
def order_shown_status(order: Any) -> str:
    return funding.shown_status(order, now()).value


@global_()
def refund_word(order: Any) -> str | None:
    return funding.refund_word(order.refund_state)


# --- rewards ----------------------------------------------------------------------------------


@global_()
def ticket_actions(ticket: Any) -> frozenset[rewards.TicketAction]:
    starts_at = ticket.screening.starts_at if ticket.screening is not None else None
    return rewards.ticket_actions(ticket.status, starts_at, now())


@global_()
def ticket_booked(ticket: Any) -> bool:
    return rewards.is_booked(ticket.status)


@global_()
def ticket_redeemed(ticket: Any) -> bool:
    return rewards.is_redeemed(ticket.status)


@global_()
def ticket_void(ticket: Any) -> bool:
    return rewards.is_void(ticket.status)


@global_()
def tier_actions(film: Any) -> frozenset[rewards.TierAction]:
    return rewards.tier_actions(film.state)


# --- payouts ----------------------------------------------------------------------------------


@global_()
def filing_actions(film: Any) -> frozenset[payouts.PayoutAction]:
    return payouts.filing_actions(film.state)


@global_()
def filing_note(film: Any) -> str:
    return payouts.filing_note(film.state)


@global_()
def report_actions(report: Any) -> frozenset[payouts.PayoutAction]:
    return payouts.report_actions(report.status, report.film.studio_id, _viewer_studio_id())


@global_()
def report_awaits_decision(report: Any) -> bool:
    return payouts.awaits_decision(report.status)


@global_()
def run_actions(run: Any) -> frozenset[payouts.PayoutAction]:
    return payouts.run_actions(run.status, run.started_by_id, _viewer_id())


@global_()
def run_awaits_transfer(run: Any) -> bool:
    return payouts.awaits_transfer(run.status)


@global_()
def run_paid(run: Any) -> bool:
    return payouts.is_paid(run.status)

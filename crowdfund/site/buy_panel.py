"""The film page's buy panel (the catalogue renders it; the funding views own the buying)."""

from __future__ import annotations

import secrets
from typing import Any

from crowdfund.films.models import Film
from crowdfund.funding import queries
from crowdfund.funding.queries import funding_stats, paid_units_of_backer
from crowdfund.site.web import db


def new_form_token() -> str:
    """The idempotency key a buy form carries: one per rendered form."""
    return secrets.token_urlsafe(24)


def buy_panel_context(film: Film, viewer: Any) -> dict[str, Any]:
    """What the film page's buy panel needs."""
    stats = funding_stats(db(), [film.id])[film.id]
    remaining = max(0, film.stake_cap - stats.units_sold - stats.units_held)
    mine = queries.held_or_owned(db(), film.id, viewer.id) if viewer is not None else 0
    current = queries.current_hold(db(), film.id, viewer.id) if viewer is not None else None
    # A new hold replaces the backer's unpaid one: its units count as theirs to choose again.
    replaceable = current.units if current is not None and not current.stripe_payment_intent_id else 0
    return {
        "remaining": remaining,
        "sold_out": stats.units_sold >= film.stake_cap,
        "all_held": remaining == 0 and stats.units_sold < film.stake_cap and not replaceable,
        "next_release": queries.next_hold_release(db(), film.id) if remaining == 0 else None,
        "can_buy": max(0, min(film.per_backer_limit - mine + replaceable, remaining + replaceable)),
        "mine": mine - replaceable,
        "current_hold": current,
        "form_token": new_form_token(),
        "paid": paid_units_of_backer(db(), film.id, viewer.id) if viewer is not None else 0,
    }

"""Cross-domain reactions: what a change in one domain sets off in another.

One mechanism, used for every reaction: a function here calls the domain
that makes the change and then the domains that react to it, in the same
transaction. No signals: a lower domain never learns who reacts to it, and
views and jobs call these functions instead of the lower domain's.

- a film opened for funding gets its stake counters (funding.inventory);
- a paid order cancelled by its backer is confirmed by e-mail (funding.notices);
- a paid order cancelled by its backer, or refunded because its round failed
  or its film was cancelled, voids the unbooked tickets its backer's stakes
  no longer earn (rewards);
- a funded film releases its escrow and issues its tickets, and a failed or
  cancelled one refunds its backers: the round close,
  crowdfund/workflows/round_close.py.

Transactions: the caller's (a request, or a job's step); these only flush.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.films import services as films
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding import refunds
from crowdfund.funding.inventory import open_inventory
from crowdfund.funding.models import Order
from crowdfund.funding.notices import queue_cancellation_email
from crowdfund.rewards.tickets import void_unbooked_tickets
from crowdfund.workflows.task_requests import schedule_order_refund, schedule_refunds


def change_film_state(
    session: Session,
    film: Film,
    target: FilmState,
    *,
    now: datetime,
    actor: User | None = None,
    reason: str | None = None,
) -> None:
    """films.services.change_film_state, and what the move sets off: a film
    opened for funding gets its stake counters."""
    films.change_film_state(session, film, target, now=now, actor=actor, reason=reason)
    if target == FilmState.FUNDING:
        open_inventory(session, film)


def approve_film(session: Session, film: Film, admin: User, *, now: datetime) -> None:
    """An admin opens the film for funding (films.services.approve); its
    stakes go on sale."""
    films.approve(session, film, admin, now=now)
    open_inventory(session, film)


def cancel_order(session: Session, order: Order, user: User, *, now: datetime) -> None:
    """A backer cancels a paid order (funding.refunds.cancel_order); the
    tickets its stakes earned are voided unless booked, and the backer gets
    an e-mail confirming it with the refund."""
    if refunds.cancel_order(session, order, user, now=now):
        void_unbooked_tickets(session, order.film_id, order.user_id, now=now)
        queue_cancellation_email(session, order)
        # Carried out at Stripe by a worker, after this commits.
        schedule_order_refund(session, order, now=now)


def cancel_film(session: Session, film: Film, admin: User, reason: str, *, now: datetime) -> None:
    """An admin stops a film (films.services.cancel_film); if it was selling,
    its backers' refunds are decided and carried out by workers after commit."""
    films.cancel_film(session, film, admin, reason, now=now)
    schedule_refunds(session, film.id, now=now)


def refund_paid_order(session: Session, order: Order, *, now: datetime, count_sold: bool = True) -> bool:
    """The round failed or the film was cancelled: a paid order is refunded
    (funding.refunds.refund_paid_order) and its unbooked tickets voided."""
    if not refunds.refund_paid_order(session, order, now=now, count_sold=count_sold):
        return False
    void_unbooked_tickets(session, order.film_id, order.user_id, now=now)
    return True

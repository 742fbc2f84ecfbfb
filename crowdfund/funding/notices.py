"""The e-mails funding sends its backers: a cancelled order confirmed, and
a film funded. Each is queued in the transaction of the change it reports
(crowdfund/mail/outbox.py), keyed so it is sent once, and shows times in the
backer's time zone with a link back to the page it talks about."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.errors import Conflict
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order
from crowdfund.funding.queries import paid_orders_of
from crowdfund.mail.outbox import queue_email

#: The states of a film whose round reached its goal.
_FUNDED_STATES = (FilmState.FUNDED, FilmState.RELEASED, FilmState.CLOSED)


def queue_cancellation_email(session: Session, order: Order) -> bool:
    """Confirm a backer's cancelled order with its refund, requested (the
    cancellation's transaction queues it; the refund is carried out after)."""
    user = session.get(User, order.user_id)
    assert user is not None
    return queue_email(
        session,
        key=f"order-cancelled:{order.id}",
        to=user.email,
        template="order_cancelled",
        name=user.display_name,
        order=order,
        film=order.film,
        tz=user.time_zone,
    )


def queue_funded_emails(
    session: Session, film_id: int, *, after_user_id: int = 0, batch_size: int = 1000
) -> tuple[int, int] | None:
    """One e-mail per backer of a funded film (whatever its reward tiers), for
    the next `batch_size` backers with a user id above `after_user_id`, keyed
    so a rerun sends nothing twice. Returns (e-mails queued, the last user id
    of the batch), or None when no backer is left. The caller commits each batch."""
    film = session.get(Film, film_id)
    if film is None or film.state not in _FUNDED_STATES:
        raise Conflict("Only a funded film's backers are told it is funded.")
    rows = session.execute(
        select(
            User.id,
            User.email,
            User.display_name,
            User.time_zone,
            func.sum(Order.units),
            func.sum(Order.amount_cents),
        )
        .join(Order, Order.user_id == User.id)
        .where(paid_orders_of(film_id), User.id > after_user_id)
        .group_by(User.id, User.email, User.display_name, User.time_zone)
        .order_by(User.id)
        .limit(batch_size)
    ).all()
    if not rows:
        return None
    queued = 0
    for user_id, email, name, time_zone, units, amount_cents in rows:
        queued += queue_email(
            session,
            key=f"film-funded:{film_id}:{user_id}",
            to=email,
            template="film_funded",
            name=name,
            film=film,
            units=int(units),
            amount_cents=int(amount_cents),
            tz=time_zone,
        )
    return queued, rows[-1][0]

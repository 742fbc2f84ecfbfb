"""Holding stakes: a pending order reserves its units until it is paid, given
back or lapses. The inventory rules and the lock order every path takes are
in crowdfund/funding/inventory.py.

A backer has at most one pending order per film (a partial unique index):
a new hold replaces the backer's unpaid pending order of the film.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.db import rowcount
from crowdfund.errors import Conflict, DomainError, NotFound
from crowdfund.films.models import Film
from crowdfund.films.states import PUBLIC_STATES, FilmState
from crowdfund.funding.hold_statement import (
    DuplicateRequest,
    HoldInProgress,
    attempt_hold_postgresql,
    attempt_hold_sqlite,
    insert_order,
)
from crowdfund.funding.hold_terms import HoldTerms
from crowdfund.funding.inventory import adjust, expire_releasable, reserve_position, reserve_units
from crowdfund.funding.models import BackerPosition, Order, OrderStatus
from crowdfund.funding.orders import move_order, new_reference
from crowdfund.funding.queries import find_by_idempotency_key, next_hold_release, visible_film
from crowdfund.session_services import services_of


class SoldOut(Conflict):
    def __init__(self, next_release: datetime | None) -> None:
        message = "Sold out: every stake is sold or held."
        if next_release is not None:
            message += (
                " Held stakes that are not paid for come free again; check back after "
                + next_release.strftime("%H:%M UTC")
                + "."
            )
        else:
            message = "Sold out: every stake has been sold."
        super().__init__(message)
        self.next_release = next_release


class LimitReached(Conflict):
    pass


@dataclass(frozen=True)
class HoldRequest:
    film_id: int
    units: int
    #: The token of the form that asked; the same token finds the same order.
    idempotency_key: str


class _TermsChanged(Exception):
    """The film is no longer open on the terms the order was priced with."""


def _hold_refusal(film: Film | HoldTerms | None, request: HoldRequest, now: datetime) -> DomainError | None:
    if film is None:
        return NotFound("No such film.")
    if film.state != FilmState.FUNDING or now >= film.deadline:
        return Conflict("This film is not open for funding.")
    if not 1 <= request.units <= film.per_backer_limit:
        return DomainError(f"Choose between 1 and {film.per_backer_limit} stakes.", field="units")
    return None


def _refusal_of_film(
    session: Session, film: Film | None, user: User, request: HoldRequest, now: datetime
) -> DomainError | None:
    """The refusal decided on the film as read: a film the user may not see
    (no longer public, as after cached terms of it) is not found, as the film
    page would say (visible_film: one more read, on refusals only)."""
    refusal = _hold_refusal(film, request, now)
    if refusal is not None and film is not None and film.state not in PUBLIC_STATES:
        try:
            visible_film(session, film.slug, user, for_hold=True)
        except NotFound as not_found:
            return not_found
    return refusal


def _refuse(session: Session, user: User, key: str, request: HoldRequest, refusal: DomainError) -> Order:
    """The order this key made before, for this quantity, wins over any refusal."""
    existing = find_by_idempotency_key(session, user.id, key)
    if existing is not None and _same_request(existing, request):
        return existing
    raise refusal


def hold_stakes(
    session: Session,
    user: User,
    request: HoldRequest,
    *,
    now: datetime,
    hold_window: timedelta,
    terms: HoldTerms | None = None,
) -> Order:
    """Hold `units` stakes for `user` in a new pending order, or return the order
    this same request created before (double click, retry).

    A backer has at most one pending order per film: a new hold replaces the
    backer's pending order of the film whose payment has not started (its
    units are given back in the same transaction), and is refused while a
    payment of one is under way. The same form sent again with another
    quantity (back button) never returns the order for the old quantity: it
    holds the new one instead, or says why it cannot.

    `terms` (from hold_terms) spare reading the film: the hold's first
    statement checks them against the film. One path on both databases; only
    the reserving statements differ (attempt_hold_postgresql, attempt_hold_sqlite)."""
    key = (request.idempotency_key or "").strip()[:64]
    if len(key) < 16:
        raise DomainError("The form was incomplete. Reload the page and try again.")
    film: Film | HoldTerms | None = None
    refusal: DomainError | None = None
    if terms is not None and terms.id == request.film_id:
        film = terms
        refusal = _hold_refusal(film, request, now)
    if film is None or refusal is not None:
        # Refusals are decided on the film as it is, never on cached terms.
        read = session.get(Film, request.film_id)
        film, refusal = read, _refusal_of_film(session, read, user, request, now)
    if refusal is not None:
        return _refuse(session, user, key, request, refusal)
    assert film is not None
    order = Order(
        reference=new_reference(),
        film_id=film.id,
        user_id=user.id,
        units=request.units,
        unit_price_cents=film.stake_price_cents,
        amount_cents=request.units * film.stake_price_cents,
        status=OrderStatus.PENDING.value,
        idempotency_key=key,
        created_at=now,
        expires_at=now + hold_window,
    )
    try:
        return _hold_on(session, film, order, now)
    except _TermsChanged:
        pass
    # Cached terms gone stale (the film closed, or is not the film cached), or
    # the film closed since it was read; nothing was written: forget them and
    # hold against the film as it is now.
    services_of(session).hold_terms_cache.forget(film.slug)
    fresh = session.get(Film, request.film_id, populate_existing=True)
    refusal = _refusal_of_film(session, fresh, user, request, now)
    if refusal is not None:
        return _refuse(session, user, key, request, refusal)
    assert fresh is not None
    order.unit_price_cents = fresh.stake_price_cents
    order.amount_cents = request.units * fresh.stake_price_cents
    try:
        return _hold_on(session, fresh, order, now)
    except _TermsChanged:
        # Closed between our read and the statement.
        raise Conflict("This film is not open for funding.") from None


def _hold_on(session: Session, film: Film | HoldTerms, order: Order, now: datetime) -> Order:
    """Hold `order` against `film` (terms or the film): the one decision path
    of both databases. Raises _TermsChanged, having written nothing, when the
    film is not open on these terms."""
    if session.get_bind().dialect.name == "postgresql":
        attempt = attempt_hold_postgresql(session, film, order)
    else:
        attempt = attempt_hold_sqlite(session, film, order)
    if attempt.prior_id is not None:
        prior = session.get(Order, attempt.prior_id)
        if prior is None:
            raise DuplicateRequest()
        if prior.film_id == order.film_id and prior.units == order.units:
            return prior
        # The film's state decides before the form's old order, as when it is read.
        if not attempt.film_open:
            raise _TermsChanged()
        _free_form_key(session, prior, order.idempotency_key)
        return _hold_releasing(session, film, order, now)
    if not attempt.film_open:
        raise _TermsChanged()
    if not attempt.clear:
        # Lapsed holds or the buyer's own pending order stand in the way.
        return _hold_releasing(session, film, order, now)
    if attempt.order_id is None:
        # The same form submitted twice at once: the other request made the order.
        raise DuplicateRequest()
    if not attempt.position_ok:
        _raise_limit_reached(session, film, order.user_id)
    if not attempt.units_ok:
        raise SoldOut(next_hold_release(session, film.id, excluding=attempt.order_id))
    return order


def _hold_releasing(session: Session, film: Film | HoldTerms, order: Order, now: datetime) -> Order:
    """A hold that first releases lapsed holds of the film and the buyer's own
    pending order (replaced by this one). Lock order as everywhere: the
    released orders and the new order; then positions in user id order (the
    released owners' decreased, the buyer's reserved); then the counter."""
    released = expire_releasable(session, film.id, now, buyer_id=order.user_id)
    _refuse_while_paying(session, film.id, order.user_id)
    insert_order(session, order)
    for user_id in sorted(set(released) | {order.user_id}):
        if released.get(user_id):
            adjust(session, film.id, user_id, position=-released[user_id])
        if user_id == order.user_id and not reserve_position(session, film, user_id, order.units):
            _raise_limit_reached(session, film, user_id)
    total = sum(released.values())
    if total:
        adjust(session, film.id, None, held=-total)
    if not reserve_units(session, film.id, order.units):
        raise SoldOut(next_hold_release(session, film.id, excluding=order.id))
    return order


def _same_request(order: Order, request: HoldRequest) -> bool:
    return order.film_id == request.film_id and order.units == request.units


class FormAlreadyUsed(Conflict):
    """The form's key made an order for another quantity that cannot be replaced."""


def _free_form_key(session: Session, prior: Order, key: str) -> None:
    """The form that made `prior` came back with another quantity (the back
    button): unless `prior` is paid or being paid, it gives its key up to the
    new hold (and, still pending, is released with the buyer's pending orders)."""
    if prior.stripe_payment_intent_id is None and prior.status in (OrderStatus.PENDING, OrderStatus.EXPIRED):
        freed = rowcount(
            session.execute(
                update(Order)
                .where(
                    Order.id == prior.id,
                    Order.idempotency_key == key,
                    Order.stripe_payment_intent_id.is_(None),
                    Order.status.in_((OrderStatus.PENDING, OrderStatus.EXPIRED)),
                )
                .values(idempotency_key=f"replaced:{prior.id}")
                .execution_options(synchronize_session=False)
            )
        )
        if freed == 1:
            session.expire(prior)
            return
    session.refresh(prior)
    if prior.idempotency_key != key:
        raise DuplicateRequest()
    stakes = f"{prior.units} stake{'s' if prior.units != 1 else ''}"
    if prior.status == OrderStatus.PAID:
        what = f"bought {stakes} (order {prior.reference}), which stays as it is"
    elif prior.stripe_payment_intent_id is not None and prior.status in (
        OrderStatus.PENDING,
        OrderStatus.EXPIRED,
    ):
        what = f"is paying for {stakes} (order {prior.reference}); that payment is not changed"
    else:
        what = f"was used for order {prior.reference} ({stakes})"
    raise FormAlreadyUsed(
        f"This form already {what}. Nothing else was ordered: choose again on the film page."
    )


class PaymentUnderWay(Conflict):
    pass


def _refuse_while_paying(session: Session, film_id: int, user_id: int) -> None:
    """After the buyer's replaceable holds were released, a pending order left
    is one whose payment is under way (no second hold beside it), or one that
    another window of the buyer made at this moment."""
    row = session.execute(
        select(Order.reference, Order.stripe_payment_intent_id)
        .where(Order.user_id == user_id, Order.film_id == film_id, Order.status == OrderStatus.PENDING)
        .limit(1)
    ).first()
    if row is None:
        return
    if row.stripe_payment_intent_id is None:
        raise HoldInProgress()
    raise PaymentUnderWay(
        f"Your payment for order {row.reference} is still being processed. Wait until it "
        "completes (its order page shows the result) before holding more stakes."
    )


def _raise_limit_reached(session: Session, film: Film | HoldTerms, user_id: int) -> None:
    current = (
        session.scalar(
            select(BackerPosition.units).where(
                BackerPosition.film_id == film.id, BackerPosition.user_id == user_id
            )
        )
        or 0
    )
    left = max(0, film.per_backer_limit - current)
    raise LimitReached(
        f"Each backer may hold at most {film.per_backer_limit} stakes in this film; you have {current} "
        f"paid or being paid, so you can add {left} more (a new hold replaces your unpaid one).",
        field="units",
    )


def release_hold(session: Session, order: Order, user: User, *, now: datetime) -> bool:
    """The backer gives a hold back before paying: its units are free at once.
    False if it was no longer held (released, lapsed and released, failed)."""
    if order.user_id != user.id:
        raise NotFound("No such order.")
    units = order.units
    if order.status != OrderStatus.PENDING:
        session.refresh(order)
    elif move_order(
        session, order, OrderStatus.EXPIRED, now=now, where=(Order.stripe_payment_intent_id.is_(None),)
    ):
        adjust(session, order.film_id, order.user_id, position=-units, held=-units)
        return True
    if order.status == OrderStatus.PENDING:
        raise Conflict(
            "Your payment for this order is being processed, so the hold can no longer be released."
        )
    if order.status == OrderStatus.PAID:
        raise Conflict("This order is paid. To get your money back, cancel the order instead.")
    return False

"""Holds, payment settlement, cancellation: the inventory rules of DESIGN.md.

Stakes are reserved with conditional statements and a row-count check, never
by reading a count in Python and writing it back:

- the backer's position: `units = units + n WHERE units + n <= limit`
- the film's counters:   `held = held + n WHERE sold + held + n <= cap`

A backer has at most one pending order per film (a partial unique index):
a new hold replaces the backer's unpaid pending order of the film.

Lock order, the same everywhere so that transactions never deadlock:
orders -> backer_positions (in user id order when several) -> film_inventory.
"Orders" includes inserting one: a new pending order waits on the
one-pending-order index for any transaction that is moving the same
backer's pending order of the film, so it is written before any position.
Each path, in the order it takes its locks:

- hold, fast path (PostgreSQL: the one HOLD_STATEMENT_PG; SQLite: separate
  statements, one writer at a time; both decided by the one _hold_on): the
  new order, the buyer's position, the counter. A hold on stale terms first
  ran that statement and it wrote nothing (the film is not open on them);
  it then reads the film and takes this path or the next.
- hold that releases first (_hold_releasing): the lapsed orders of the film
  and the buyer's unpaid pending order (one UPDATE), the new order, then the
  released owners' positions and the buyer's in user id order, the counter.
  The same form sent again with another quantity first takes its key back
  from its old order (an UPDATE of that order).
- release_expired_holds (round close): the lapsed orders, their owners'
  positions in user id order, the counter.
- release_hold (the backer gives a hold back), settle_failure, cancel_order,
  refund_paid_order: the order, the position, the counter.
- settle_success: the order (SELECT ... FOR UPDATE, before anything else, so
  that the webhook, the fan's return and the reconciler settling one order
  at once queue on it), then for a late charge the position and the counter.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, bindparam, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from crowdfund import audit, ledger, transitions
from crowdfund.accounts.models import User
from crowdfund.db import UTCDateTime, rowcount
from crowdfund.errors import Conflict, DomainError, Forbidden, NotFound
from crowdfund.films.models import Film
from crowdfund.films.services import visible_film
from crowdfund.films.states import PUBLIC_STATES, FilmState
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, OrderStatus, RefundState
from crowdfund.funding.rules import (
    ORDER_TRANSITIONS,
    REFUND_TRANSITIONS,
    cancellation_deadline,
)
from crowdfund.ledger import Account, EntryKind
from crowdfund.rewards.tickets import void_unbooked_tickets

REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class SoldOut(Conflict):
    def __init__(self, next_release: datetime | None) -> None:
        message = "Sold out: every stake is sold or held."
        if next_release is not None:
            message += " Held stakes that are not paid for come free again; check back after " + next_release.strftime(
                "%H:%M UTC"
            ) + "."
        else:
            message = "Sold out: every stake has been sold."
        super().__init__(message)
        self.next_release = next_release


class LimitReached(Conflict):
    pass


def new_reference() -> str:
    # 12 characters from 32 symbols: 60 random bits, unguessable and easy to read aloud.
    # One draw of 60 bits, five per symbol (a choice() per symbol costs 12 draws).
    bits = secrets.randbits(60)
    return "RS-" + "".join(REFERENCE_ALPHABET[(bits >> shift) & 31] for shift in range(0, 60, 5))


# --- the one function that moves an order between states -----------------------------


ORDER = transitions.Machine(name="order", model=Order, column="status", transitions=ORDER_TRANSITIONS)
#: Refund moves are audited only when Stripe has the refund; the claims are not.
REFUND = transitions.Machine(
    name="refund", model=Order, column="refund_state", transitions=REFUND_TRANSITIONS,
    audit_actions={RefundState.DONE: "refund.done"}, audit_object_type="order",
    audit_object_id=lambda order: order.reference,
    # The refund worker calls Stripe between its transactions: the order must
    # not need a reload (a transaction) after its claim.
    keep_loaded=True,
)


def move_order(session: Session, order: Order, target: OrderStatus, *, now: datetime,
               where: Sequence[ColumnElement[bool]] = (), **values: object) -> bool:
    """Move `order` to `target` if it is still in the status we last saw.

    Checks the transition, then updates conditionally on the old status so
    that of two concurrent movers exactly one wins. Returns False (and
    refreshes `order`) when another transaction moved it first. A refund
    decided with the move (`refund_state=`) is checked against the refund
    machine's table. No history or audit per move: the hot path stays cheap.
    """
    if "refund_state" in values:
        transitions.check(REFUND, order.refund_state, values["refund_state"])  # type: ignore[arg-type]
    if target in (OrderStatus.CANCELLED, OrderStatus.REFUNDED, OrderStatus.EXPIRED, OrderStatus.FAILED):
        values.setdefault("closed_at", now)
    if target == OrderStatus.PAID:
        values.setdefault("paid_at", now)
    return transitions.move(session, ORDER, order, target, now=now, values=values, where=where)


# --- inventory statements --------------------------------------------------------------


def _reserve_position(session: Session, film: Film | HoldTerms, user_id: int, units: int) -> bool:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(BackerPosition).values(film_id=film.id, user_id=user_id, units=units)
    upsert = statement.on_conflict_do_update(
        index_elements=[BackerPosition.film_id, BackerPosition.user_id],
        set_={"units": BackerPosition.units + statement.excluded.units},
        where=BackerPosition.units + statement.excluded.units <= film.per_backer_limit,
    ).returning(BackerPosition.units)
    return session.execute(upsert).first() is not None


def _reserve_units(session: Session, film_id: int, units: int) -> bool:
    result = session.execute(
        update(FilmInventory)
        .where(
            FilmInventory.film_id == film_id,
            FilmInventory.sold + FilmInventory.held + units <= FilmInventory.cap,
        )
        .values(held=FilmInventory.held + units)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def _adjust(session: Session, film_id: int, user_id: int | None, *, held: int = 0, sold: int = 0,
            position: int = 0) -> None:
    """Unconditional counter moves for units this transaction already owns."""
    if position and user_id is not None:
        session.execute(
            update(BackerPosition)
            .where(BackerPosition.film_id == film_id, BackerPosition.user_id == user_id)
            .values(units=BackerPosition.units + position)
            .execution_options(synchronize_session=False)
        )
    if held or sold:
        session.execute(
            update(FilmInventory)
            .where(FilmInventory.film_id == film_id)
            .values(held=FilmInventory.held + held, sold=FilmInventory.sold + sold)
            .execution_options(synchronize_session=False)
        )


def release_expired_holds(session: Session, film_id: int, now: datetime) -> int:
    """Expire every lapsed hold of a film and give its units back. Safe to run
    from any number of transactions at once: each order is released by the one
    conditional UPDATE that moves it out of pending. Returns units released.
    Locks: the released orders, their owners' positions in user id order, the
    counter."""
    released = _expire_releasable(session, film_id, now, buyer_id=None)
    for user_id in sorted(released):
        _adjust(session, film_id, user_id, position=-released[user_id])
    total = sum(released.values())
    if total:
        _adjust(session, film_id, None, held=-total)
    return total


def _expire_releasable(session: Session, film_id: int, now: datetime, *,
                       buyer_id: int | None) -> dict[int, int]:
    """Move the film's lapsed holds, and with `buyer_id` that buyer's pending
    orders whose payment has not started (a new hold replaces them), to
    expired in one conditional UPDATE. Units released, by user id."""
    transitions.check(ORDER, OrderStatus.PENDING, OrderStatus.EXPIRED)
    releasable = Order.expires_at <= now
    if buyer_id is not None:
        own_unpaid = and_(Order.user_id == buyer_id, Order.stripe_payment_intent_id.is_(None))
        releasable = or_(releasable, own_unpaid)
    expired = session.execute(
        update(Order)
        .where(Order.film_id == film_id, Order.status == OrderStatus.PENDING, releasable)
        .values(status=OrderStatus.EXPIRED.value, closed_at=now)
        .returning(Order.user_id, Order.units)
        .execution_options(synchronize_session=False)
    ).all()
    per_user: dict[int, int] = {}
    for user_id, units in expired:
        per_user[user_id] = per_user.get(user_id, 0) + units
    return per_user


def release_hold(session: Session, order: Order, user: User, *, now: datetime) -> bool:
    """The backer gives a hold back before paying: its units are free at once.
    False if it was no longer held (released, lapsed and released, failed)."""
    if order.user_id != user.id:
        raise NotFound("No such order.")
    units = order.units
    if order.status != OrderStatus.PENDING:
        session.refresh(order)
    elif move_order(session, order, OrderStatus.EXPIRED, now=now, where=(Order.stripe_payment_intent_id.is_(None),)):
        _adjust(session, order.film_id, order.user_id, position=-units, held=-units)
        return True
    if order.status == OrderStatus.PENDING:
        raise Conflict("Your payment for this order is being processed, so the hold can no longer be "
                       "released.")
    if order.status == OrderStatus.PAID:
        raise Conflict("This order is paid. To get your money back, cancel the order instead.")
    return False


def next_hold_release(session: Session, film_id: int, *, excluding: int | None = None) -> datetime | None:
    """When the film's next pending hold lapses; `excluding`: a hold being refused."""
    return session.scalar(
        select(Order.expires_at)
        .where(Order.film_id == film_id, Order.status == OrderStatus.PENDING, Order.id != (excluding or 0))
        .order_by(Order.expires_at)
        .limit(1)
    )


# --- holding stakes ----------------------------------------------------------------------


@dataclass(frozen=True)
class HoldRequest:
    film_id: int
    units: int
    #: The token of the form that asked; the same token finds the same order.
    idempotency_key: str


#: A hold in one round trip on PostgreSQL (_attempt_hold_sqlite does the same
#: in separate statements; _hold_on maps the outcome for both). In order: the
#: order this form's key made before (`prior`: then nothing is written); whether the film is open
#: for funding on the terms the caller priced the order with (`film_open`: the
#: caller's terms may come from HoldTermsCache); whether lapsed holds or the
#: buyer's own pending order of the film could stand in the way (`clear`: a
#: read that only decides whether to clean up: when false nothing is written
#: and the caller takes the releasing path, _hold_releasing; a pending order
#: of the buyer that appears meanwhile is refused by the one-pending-order
#: index); then the order INSERT and the same conditional statements as
#: _reserve_position and _reserve_units, in the lock order (orders, position,
#: counter), each only if the one before succeeded. The caller learns from the
#: flags which step refused; a refusal after the order or the position was
#: written is undone by the caller's rollback, exactly as with separate
#: statements.
HOLD_STATEMENT_PG = """
WITH prior AS (
    SELECT id FROM orders WHERE user_id = :user_id AND idempotency_key = :idempotency_key
), film_open AS (
    SELECT EXISTS (
        SELECT FROM films WHERE id = :film_id AND state = 'funding' AND deadline > :created_at
            AND per_backer_limit = :per_backer_limit AND stake_price_cents = :unit_price_cents
    ) AS ok
), clear AS (
    SELECT (
        (SELECT sold + held + :units <= cap FROM film_inventory WHERE film_id = :film_id)
        AND coalesce((SELECT units FROM backer_positions WHERE film_id = :film_id AND user_id = :user_id), 0)
            + :units <= :per_backer_limit
        AND NOT EXISTS (SELECT FROM orders
                        WHERE user_id = :user_id AND film_id = :film_id AND status = 'pending')
    ) AS ok
), go AS (
    SELECT FROM clear, film_open WHERE clear.ok AND film_open.ok AND NOT EXISTS (SELECT FROM prior)
), ins AS (
    INSERT INTO orders (reference, film_id, user_id, units, unit_price_cents, amount_cents, status,
                        idempotency_key, created_at, expires_at)
    SELECT :reference, :film_id, :user_id, :units, :unit_price_cents, :amount_cents, 'pending',
           :idempotency_key, :created_at, :expires_at
    WHERE EXISTS (SELECT FROM go)
    ON CONFLICT (user_id, idempotency_key) DO NOTHING
    RETURNING id
), pos AS (
    INSERT INTO backer_positions AS bp (film_id, user_id, units)
    SELECT :film_id, :user_id, :units WHERE EXISTS (SELECT FROM ins)
    ON CONFLICT (film_id, user_id) DO UPDATE SET units = bp.units + excluded.units
    WHERE bp.units + excluded.units <= :per_backer_limit
    RETURNING bp.units
), inv AS (
    UPDATE film_inventory SET held = held + :units
    WHERE film_id = :film_id AND sold + held + :units <= cap AND EXISTS (SELECT FROM pos)
    RETURNING held
)
SELECT (SELECT id FROM prior) AS prior_id, (SELECT ok FROM film_open) AS film_open,
       coalesce((SELECT ok FROM clear), false) AS clear,
       EXISTS (SELECT FROM pos) AS position_ok, EXISTS (SELECT FROM inv) AS units_ok,
       (SELECT id FROM ins) AS order_id
"""

_HOLD_STATEMENT_PG = text(HOLD_STATEMENT_PG).bindparams(
    bindparam("created_at", type_=UTCDateTime()), bindparam("expires_at", type_=UTCDateTime())
)


@dataclass(frozen=True)
class HoldTerms:
    """What a hold needs of a film open for funding. Named as on Film, so that
    either can be held against. Terms are frozen once a film leaves draft;
    only its state moves on, and the hold statement checks it."""

    id: int
    slug: str
    studio_id: int
    state: str
    deadline: datetime
    per_backer_limit: int
    stake_price_cents: int

    @classmethod
    def of(cls, film: Film) -> HoldTerms:
        return cls(film.id, film.slug, film.studio_id, film.state, film.deadline, film.per_backer_limit,
                   film.stake_price_cents)


class HoldTermsCache:
    """The terms of films open for funding, by slug, for `seconds` after they
    were read: on launch day every hold would otherwise read the same film row
    (a round trip and an ORM load: 12% of a hold's CPU, bench/README.md). Never
    trusted for money: the hold's first statement (on either database) checks
    that the film is open on exactly these terms, and a mismatch drops the
    entry and holds against the film read afresh (hold_stakes). One per app, in the
    sessionmaker's info (`hold_terms_cache`)."""

    def __init__(self, seconds: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, HoldTerms]] = {}

    def get(self, slug: str) -> HoldTerms | None:
        entry = self._entries.get(slug)
        if entry is None or self._clock() - entry[0] >= self.seconds:
            return None
        return entry[1]

    def put(self, terms: HoldTerms) -> None:
        if len(self._entries) >= 1000:  # a bound, not a policy: films open at once are few
            self._entries.clear()
        self._entries[terms.slug] = (self._clock(), terms)

    def forget(self, slug: str) -> None:
        self._entries.pop(slug, None)

    def clear(self) -> None:
        self._entries.clear()


def hold_terms(session: Session, slug: str, viewer: User) -> HoldTerms:
    """The terms to hold `slug` on, as `viewer` may see the film (NotFound
    otherwise): from the app's HoldTermsCache while fresh, else read."""
    cache: HoldTermsCache | None = session.info.get("hold_terms_cache")
    terms = cache.get(slug) if cache is not None else None
    if terms is None:
        terms = HoldTerms.of(visible_film(session, slug, viewer, for_hold=True))
        if cache is not None and terms.state == FilmState.FUNDING:
            cache.put(terms)
    return terms


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


def _refusal_of_film(session: Session, film: Film | None, user: User, request: HoldRequest,
                     now: datetime) -> DomainError | None:
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


def hold_stakes(session: Session, user: User, request: HoldRequest, *, now: datetime,
                hold_window: timedelta, terms: HoldTerms | None = None) -> Order:
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
    the reserving statements differ (_attempt_hold_postgresql, _attempt_hold_sqlite)."""
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
    cache: HoldTermsCache | None = session.info.get("hold_terms_cache")
    if cache is not None:
        cache.forget(film.slug)
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


@dataclass(frozen=True)
class _HoldAttempt:
    """What the hold's first statement(s) found and did, as HOLD_STATEMENT_PG
    reports it: the order this key made before (`prior_id`: nothing written);
    whether the film is open on the order's terms (`film_open`: if not,
    nothing written); whether nothing stands in the way (`clear`: if not,
    nothing written, the releasing path decides); then, written in the lock
    order, the order (`order_id`; None: the key's order was made meanwhile),
    the position and the counter (each only if the one before succeeded)."""

    prior_id: int | None
    film_open: bool
    clear: bool
    position_ok: bool
    units_ok: bool
    order_id: int | None


def _hold_on(session: Session, film: Film | HoldTerms, order: Order, now: datetime) -> Order:
    """Hold `order` against `film` (terms or the film): the one decision path
    of both databases. Raises _TermsChanged, having written nothing, when the
    film is not open on these terms."""
    if session.get_bind().dialect.name == "postgresql":
        attempt = _attempt_hold_postgresql(session, film, order)
    else:
        attempt = _attempt_hold_sqlite(session, film, order)
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


def _insert_order(session: Session, order: Order) -> None:
    session.add(order)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        if "one_pending" in str(exc.orig) or "orders.film_id" in str(exc.orig):
            raise HoldInProgress() from exc
        # The same form submitted twice at once: the other request made the order.
        raise DuplicateRequest() from exc


def _hold_releasing(session: Session, film: Film | HoldTerms, order: Order, now: datetime) -> Order:
    """A hold that first releases lapsed holds of the film and the buyer's own
    pending order (replaced by this one). Lock order as everywhere: the
    released orders and the new order; then positions in user id order (the
    released owners' decreased, the buyer's reserved); then the counter."""
    released = _expire_releasable(session, film.id, now, buyer_id=order.user_id)
    _refuse_while_paying(session, film.id, order.user_id)
    _insert_order(session, order)
    for user_id in sorted(set(released) | {order.user_id}):
        if released.get(user_id):
            _adjust(session, film.id, user_id, position=-released[user_id])
        if user_id == order.user_id and not _reserve_position(session, film, user_id, order.units):
            _raise_limit_reached(session, film, user_id)
    total = sum(released.values())
    if total:
        _adjust(session, film.id, None, held=-total)
    if not _reserve_units(session, film.id, order.units):
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
        freed = rowcount(session.execute(
            update(Order)
            .where(Order.id == prior.id, Order.idempotency_key == key,
                   Order.stripe_payment_intent_id.is_(None),
                   Order.status.in_((OrderStatus.PENDING, OrderStatus.EXPIRED)))
            .values(idempotency_key=f"replaced:{prior.id}")
            .execution_options(synchronize_session=False)
        ))
        if freed == 1:
            session.expire(prior)
            return
    session.refresh(prior)
    if prior.idempotency_key != key:
        raise DuplicateRequest()
    stakes = f"{prior.units} stake{'s' if prior.units != 1 else ''}"
    if prior.status == OrderStatus.PAID:
        what = f"bought {stakes} (order {prior.reference}), which stays as it is"
    elif prior.stripe_payment_intent_id is not None and prior.status in (OrderStatus.PENDING,
                                                                         OrderStatus.EXPIRED):
        what = f"is paying for {stakes} (order {prior.reference}); that payment is not changed"
    else:
        what = f"was used for order {prior.reference} ({stakes})"
    raise FormAlreadyUsed(f"This form already {what}. Nothing else was ordered: choose again on the film "
                          "page.")


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
    raise PaymentUnderWay(f"Your payment for order {row.reference} is still being processed. Wait until it "
                          "completes (its order page shows the result) before holding more stakes.")


class HoldInProgress(Conflict):
    def __init__(self) -> None:
        super().__init__("You are already holding stakes in this film from another window. Reload the "
                         "page to see your hold.")


def _attempt_hold_postgresql(session: Session, film: Film | HoldTerms, order: Order) -> _HoldAttempt:
    """HOLD_STATEMENT_PG: the whole attempt in one round trip."""
    params = {
        "film_id": film.id, "user_id": order.user_id, "units": order.units,
        "per_backer_limit": film.per_backer_limit, "reference": order.reference,
        "unit_price_cents": order.unit_price_cents, "amount_cents": order.amount_cents,
        "idempotency_key": order.idempotency_key, "created_at": order.created_at,
        "expires_at": order.expires_at,
    }
    try:
        attempt = _HoldAttempt(*session.execute(_HOLD_STATEMENT_PG, params).one())
    except IntegrityError as exc:
        # Another hold of this backer for this film committed since our
        # statement's snapshot: the one-pending-order index refused ours.
        raise HoldInProgress() from exc
    if attempt.units_ok and attempt.order_id is not None:
        # Written by the statement above: enter it into the session as loaded,
        # with every column as written, so nothing is read back.
        order.id = attempt.order_id
        for name in ("paid_at", "closed_at", "stripe_setup_intent_id", "stripe_payment_intent_id",
                     "stripe_refund_id", "refund_state", "refund_claimed_at", "failure_message"):
            setattr(order, name, None)
        make_transient_to_detached(order)
        session.add(order)
    return attempt


def _attempt_hold_sqlite(session: Session, film: Film | HoldTerms, order: Order) -> _HoldAttempt:
    """What HOLD_STATEMENT_PG does, in one read and then the same conditional
    statements in the same order (SQLite has no writing CTEs; one writer at a
    time)."""
    user_id, units = order.user_id, order.units
    prior_id, film_open, sold_held, cap, position, pending_id = session.execute(
        select(
            select(Order.id)
            .where(Order.user_id == user_id, Order.idempotency_key == order.idempotency_key)
            .scalar_subquery(),
            select(Film.id)
            .where(Film.id == film.id, Film.state == FilmState.FUNDING, Film.deadline > order.created_at,
                   Film.per_backer_limit == film.per_backer_limit,
                   Film.stake_price_cents == order.unit_price_cents).exists(),
            select(FilmInventory.sold + FilmInventory.held)
            .where(FilmInventory.film_id == film.id).scalar_subquery(),
            select(FilmInventory.cap).where(FilmInventory.film_id == film.id).scalar_subquery(),
            select(BackerPosition.units)
            .where(BackerPosition.film_id == film.id, BackerPosition.user_id == user_id).scalar_subquery(),
            select(Order.id)
            .where(Order.user_id == user_id, Order.film_id == film.id, Order.status == OrderStatus.PENDING)
            .limit(1).scalar_subquery(),
        )
    ).one()
    clear = (cap is not None and (sold_held or 0) + units <= cap
             and (position or 0) + units <= film.per_backer_limit and pending_id is None)
    if prior_id is not None or not film_open or not clear:
        return _HoldAttempt(prior_id, bool(film_open), clear, False, False, None)
    _insert_order(session, order)
    position_ok = _reserve_position(session, film, user_id, units)
    units_ok = position_ok and _reserve_units(session, film.id, units)
    return _HoldAttempt(None, True, True, position_ok, units_ok, order.id)


def _raise_limit_reached(session: Session, film: Film | HoldTerms, user_id: int) -> None:
    current = session.scalar(
        select(BackerPosition.units).where(BackerPosition.film_id == film.id, BackerPosition.user_id == user_id)
    ) or 0
    left = max(0, film.per_backer_limit - current)
    raise LimitReached(
        f"Each backer may hold at most {film.per_backer_limit} stakes in this film; you have {current} "
        f"paid or being paid, so you can add {left} more (a new hold replaces your unpaid one).",
        field="units",
    )


class DuplicateRequest(Conflict):
    def __init__(self) -> None:
        super().__init__("This request is already being processed.")


def find_by_idempotency_key(session: Session, user_id: int, key: str) -> Order | None:
    return session.scalar(select(Order).where(Order.user_id == user_id, Order.idempotency_key == key[:64]))


# --- settling payments --------------------------------------------------------------------


def _book_payment(session: Session, order: Order, film: Film, now: datetime) -> None:
    ledger.post(
        session,
        key=EntryKind.PAYMENT.key(order.id),
        kind=EntryKind.PAYMENT,
        lines=[(Account.BACKER_CASH, order.amount_cents), (Account.escrow(film.id), -order.amount_cents)],
        now=now,
        film_id=film.id,
        order_id=order.id,
        memo=f"Order {order.reference}",
    )


@dataclass(frozen=True)
class Settlement:
    """What settling a successful charge did: `paid`, `already`, or `refund`
    (the charge came too late for its stakes and must be refunded)."""

    result: str
    order: Order


def settle_success(session: Session, order: Order, *, now: datetime) -> Settlement:
    """Record a charge Stripe reports as succeeded. Idempotent: the server's
    own confirmation, the webhook and the reconciler may all call it, at once.

    Locks the order row first (then position, then counter, as everywhere):
    two settlers of one order queue on it, and the second finds it settled."""
    session.execute(select(Order.id).where(Order.id == order.id).with_for_update())
    session.refresh(order)
    film = session.get(Film, order.film_id)
    assert film is not None
    if order.status == OrderStatus.PAID:
        return Settlement("already", order)
    if order.status == OrderStatus.PENDING:
        if move_order(session, order, OrderStatus.PAID, now=now):
            _adjust(session, film.id, None, held=-order.units, sold=order.units)
            _book_payment(session, order, film, now)
            return Settlement("paid", order)
        return settle_success(session, order, now=now)
    if order.status in (OrderStatus.EXPIRED, OrderStatus.FAILED):
        # Paid after the hold lapsed: take the units again if they are still free.
        if ledger.has_entry(session, EntryKind.PAYMENT.key(order.id)):
            return Settlement("already", order)
        if film.state == FilmState.FUNDING:
            if _reserve_position(session, film, order.user_id, order.units):
                if _reserve_units(session, film.id, order.units):
                    if move_order(session, order, OrderStatus.PAID, now=now):
                        _adjust(session, film.id, None, held=-order.units, sold=order.units)
                        _book_payment(session, order, film, now)
                        return Settlement("paid", order)
                    # Another settler moved it first: give the units back and look again.
                    _adjust(session, film.id, order.user_id, position=-order.units, held=-order.units)
                    return settle_success(session, order, now=now)
                _adjust(session, film.id, order.user_id, position=-order.units)
        # No stakes for this money: book it and owe it back at once.
        _book_payment(session, order, film, now)
        move_order(session, order, OrderStatus.REFUNDED, now=now, refund_state=RefundState.REQUESTED.value)
        _book_refund_decision(session, order, film, now, why="paid after the hold lapsed and the stakes were gone")
        return Settlement("refund", order)
    # cancelled or refunded: the money was already recorded and handled.
    return Settlement("already", order)


def settle_failure(session: Session, order: Order, message: str, *, now: datetime) -> bool:
    """A charge failed: the order fails and its hold is released."""
    session.refresh(order)
    if order.status != OrderStatus.PENDING:
        return False
    if not move_order(session, order, OrderStatus.FAILED, now=now, failure_message=message[:500]):
        return False
    _adjust(session, order.film_id, order.user_id, position=-order.units)
    _adjust(session, order.film_id, None, held=-order.units)
    return True


# --- refunds (cancellation, failed rounds) -------------------------------------------------


def _book_refund_decision(session: Session, order: Order, film: Film, now: datetime,
                          actor: User | None = None, why: str = "") -> None:
    audit.record(session, action="refund.decided", object_type="order", object_id=order.reference, now=now,
                 actor=actor, after={"status": order.status, "amount_cents": order.amount_cents}, detail=why)
    ledger.post(
        session,
        key=EntryKind.REFUND_DECIDED.key(order.id),
        kind=EntryKind.REFUND_DECIDED,
        lines=[(Account.escrow(film.id), order.amount_cents),
               (Account.refunds_payable(film.id), -order.amount_cents)],
        now=now,
        film_id=film.id,
        order_id=order.id,
        memo=f"Refund of {order.reference}",
    )


def claim_refund(session: Session, order: Order, *, now: datetime, stale_before: datetime) -> bool:
    """A refund worker claims the order's refund: a requested one, or one
    claimed before `stale_before` by a worker that never finished. Of two
    workers exactly one wins."""
    if order.refund_state == RefundState.REQUESTED:
        where: tuple[ColumnElement[bool], ...] = ()
    elif order.refund_state == RefundState.PROCESSING:
        where = (Order.refund_claimed_at <= stale_before,)
    else:
        return False
    return transitions.move(session, REFUND, order, RefundState.PROCESSING, now=now,
                            values={"refund_claimed_at": now}, where=where)


def give_back_refund_claim(session: Session, order: Order, *, now: datetime) -> bool:
    """Stripe failed: the claim goes back at once for the next run to retry.
    refund_claimed_at stays set, so that run asks Stripe first (the failed
    call may have been carried out after all)."""
    return order.refund_state == RefundState.PROCESSING and transitions.move(
        session, REFUND, order, RefundState.REQUESTED, now=now)


def book_refund_done(session: Session, order: Order, refund_id: str, *, now: datetime) -> bool:
    """Stripe has the refund: record it once."""
    if order.refund_state == RefundState.DONE:
        return False
    order_id, film_id, amount = order.id, order.film_id, order.amount_cents  # the move expires `order`
    if not transitions.move(session, REFUND, order, RefundState.DONE, now=now,
                            values={"stripe_refund_id": refund_id}, audit_after={"stripe_refund_id": refund_id}):
        return False
    ledger.post(
        session,
        key=EntryKind.REFUND.key(order_id),
        kind=EntryKind.REFUND,
        lines=[(Account.refunds_payable(film_id), amount), (Account.BACKER_CASH, -amount)],
        now=now,
        film_id=film_id,
        order_id=order_id,
        memo=f"Refund {refund_id}",
    )
    session.flush()
    return True


def cancel_order(session: Session, order: Order, user: User, *, now: datetime) -> None:
    """A backer cancels a paid order: stakes go back, a refund is owed."""
    if order.user_id != user.id:
        raise Forbidden("This is not your order.")
    film = session.get(Film, order.film_id)
    assert film is not None
    if order.status == OrderStatus.CANCELLED:
        return
    if order.status != OrderStatus.PAID:
        raise Conflict("Only paid orders can be cancelled.")
    if film.state != FilmState.FUNDING or now >= cancellation_deadline(film.deadline):
        raise Conflict("Orders can be cancelled until 48 hours before the funding deadline; that time has passed.")
    if not move_order(session, order, OrderStatus.CANCELLED, now=now, refund_state=RefundState.REQUESTED.value):
        if order.status == OrderStatus.CANCELLED:
            return
        raise Conflict("This order changed meanwhile; reload the page.")
    _adjust(session, film.id, order.user_id, position=-order.units, sold=-order.units)
    _book_refund_decision(session, order, film, now, actor=user, why="cancelled by the backer")
    void_unbooked_tickets(session, film.id, order.user_id, now=now)


def refund_paid_order(session: Session, order: Order, *, now: datetime) -> bool:
    """The round failed or the film was cancelled: a paid order is refunded."""
    film = session.get(Film, order.film_id)
    assert film is not None
    if not move_order(session, order, OrderStatus.REFUNDED, now=now, refund_state=RefundState.REQUESTED.value):
        return False
    _adjust(session, film.id, order.user_id, position=-order.units, sold=-order.units)
    _book_refund_decision(session, order, film, now, why=f"film {film.state}")
    void_unbooked_tickets(session, film.id, order.user_id, now=now)
    return True


# --- lookups -------------------------------------------------------------------------------


def own_order(session: Session, user: User, reference: str) -> Order:
    """An order of the user's; another user's order is not found."""
    order = session.scalar(select(Order).where(Order.reference == reference[:24]))
    if order is None or order.user_id != user.id:
        raise NotFound("No such order.")
    return order


def current_hold(session: Session, film_id: int, user_id: int) -> Order | None:
    """The backer's pending order of the film (at most one), lapsed or not."""
    return session.scalar(
        select(Order)
        .where(Order.film_id == film_id, Order.user_id == user_id, Order.status == OrderStatus.PENDING)
        .order_by(Order.id.desc()).limit(1)
    )


def hold_state(order: Order, now: datetime) -> str | None:
    """"held", "paying" or "lapsed" for a pending order, None otherwise."""
    if order.status != OrderStatus.PENDING:
        return None
    if order.stripe_payment_intent_id:
        return "paying"
    return "lapsed" if order.expires_at <= now else "held"


def held_or_owned(session: Session, film_id: int, user_id: int) -> int:
    return session.scalar(
        select(BackerPosition.units).where(and_(BackerPosition.film_id == film_id, BackerPosition.user_id == user_id))
    ) or 0

"""The terms a hold is priced on, and the app's short-lived cache of them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.queries import visible_film
from crowdfund.session_services import services_of


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
        return cls(
            film.id,
            film.slug,
            film.studio_id,
            film.state,
            film.deadline,
            film.per_backer_limit,
            film.stake_price_cents,
        )


class HoldTermsCache:
    """The terms of films open for funding, by slug, for `seconds` after they
    were read: on launch day every hold would otherwise read the same film row
    (a round trip and an ORM load: 12% of a hold's CPU, bench/README.md). Never
    trusted for money: the hold's first statement (on either database) checks
    that the film is open on exactly these terms, and a mismatch drops the
    entry and holds against the film read afresh (hold_stakes). One per app, in the
    its AppServices (`services_of(session).hold_terms_cache`)."""

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
    cache = services_of(session).hold_terms_cache
    terms: HoldTerms | None = cache.get(slug)
    if terms is None:
        terms = HoldTerms.of(visible_film(session, slug, viewer, for_hold=True))
        if terms.state == FilmState.FUNDING:
            cache.put(terms)
    return terms

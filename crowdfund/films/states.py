"""The film state machine. Pure: no database, no Flask."""

from __future__ import annotations

from enum import StrEnum


class FilmState(StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    FUNDING = "funding"
    FUNDED = "funded"
    FAILED = "failed"
    RELEASED = "released"
    CLOSED = "closed"
    CANCELLED = "cancelled"


FILM_TRANSITIONS: dict[FilmState, frozenset[FilmState]] = {
    FilmState.DRAFT: frozenset({FilmState.IN_REVIEW, FilmState.CANCELLED}),
    FilmState.IN_REVIEW: frozenset({FilmState.DRAFT, FilmState.FUNDING, FilmState.CANCELLED}),
    FilmState.FUNDING: frozenset({FilmState.FUNDED, FilmState.FAILED, FilmState.CANCELLED}),
    FilmState.FUNDED: frozenset({FilmState.RELEASED}),
    FilmState.RELEASED: frozenset({FilmState.CLOSED}),
    FilmState.FAILED: frozenset(),
    FilmState.CLOSED: frozenset(),
    FilmState.CANCELLED: frozenset(),
}

#: States the public catalogue shows.
PUBLIC_STATES = frozenset(
    {FilmState.FUNDING, FilmState.FUNDED, FilmState.FAILED, FilmState.RELEASED, FilmState.CLOSED}
)

STATE_LABELS = {
    FilmState.DRAFT: "Draft",
    FilmState.IN_REVIEW: "In review",
    FilmState.FUNDING: "Open for funding",
    FilmState.FUNDED: "Funded",
    FilmState.FAILED: "Not funded",
    FilmState.RELEASED: "Released",
    FilmState.CLOSED: "Closed",
    FilmState.CANCELLED: "Cancelled",
}

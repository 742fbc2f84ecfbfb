"""Reward rules. Pure: no database, no Flask."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from crowdfund.films.states import FilmState
from crowdfund.rewards.models import TicketStatus

#: 32 symbols without look-alikes (no I, O, 0, 1): 5 bits each.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
#: 20 symbols x 5 bits = 100 bits from `secrets`, far past the 80 the issue asks.
CODE_LENGTH = 20
MAX_TICKETS_PER_TIER = 20
MAX_TIERS = 10
MAX_EXTRAS = 500

TICKET_TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    TicketStatus.ISSUED: frozenset({TicketStatus.BOOKED, TicketStatus.VOID}),
    # booked -> booked: moved to another screening; booked -> issued: booking given up.
    TicketStatus.BOOKED: frozenset({TicketStatus.BOOKED, TicketStatus.ISSUED, TicketStatus.REDEEMED}),
    TicketStatus.REDEEMED: frozenset(),
    TicketStatus.VOID: frozenset(),
}

STATUS_LABELS = {
    TicketStatus.ISSUED: "Not booked yet",
    TicketStatus.BOOKED: "Booked",
    TicketStatus.REDEEMED: "Used",
    TicketStatus.VOID: "Void",
}


def new_ticket_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(raw: str) -> str:
    """What a person or scanner typed, as stored: upper case letters and digits
    only (codes have nothing else; control characters never reach the log)."""
    return re.sub(r"[^0-9A-Za-z]+", "", raw or "").upper()[:40]


def format_code(code: str) -> str:
    """Grouped in fives for reading aloud: ABCDE-FGHJK-..."""
    return "-".join(code[i : i + 5] for i in range(0, len(code), 5))


class TierLike(Protocol):
    min_stakes: int
    tickets: int


def tier_for(tiers: Sequence[TierLike], stakes: int) -> TierLike | None:
    """The highest tier `stakes` paid stakes reach, or None."""
    reached = [t for t in tiers if t.min_stakes <= stakes]
    return max(reached, key=lambda t: t.min_stakes) if reached else None


def tickets_for(tiers: Sequence[TierLike], stakes: int) -> int:
    tier = tier_for(tiers, stakes)
    return tier.tickets if tier is not None else 0


@dataclass(frozen=True)
class TierInput:
    min_stakes: int
    tickets: int
    extras: str


def tier_problem(existing: Sequence[TierLike], new: TierInput, per_backer_limit: int) -> str | None:
    """Why `new` cannot join `existing`, or None. Tickets never fall as stakes
    rise, so buying more never costs a backer tickets."""
    if not 1 <= new.min_stakes <= per_backer_limit:
        return f"A tier needs between 1 and {per_backer_limit} stakes (the per-backer limit)."
    if not 0 <= new.tickets <= MAX_TICKETS_PER_TIER:
        return f"A tier gives between 0 and {MAX_TICKETS_PER_TIER} screening tickets."
    if new.tickets == 0 and not new.extras.strip():
        return "A tier with no tickets must describe its extras."
    if len(new.extras) > MAX_EXTRAS:
        return f"Describe the extras in at most {MAX_EXTRAS} characters."
    if len(existing) >= MAX_TIERS:
        return f"A film has at most {MAX_TIERS} tiers."
    for tier in existing:
        if tier.min_stakes == new.min_stakes:
            return f"There is already a tier at {new.min_stakes} stakes."
        if tier.min_stakes < new.min_stakes and tier.tickets > new.tickets:
            return (
                f"The tier at {tier.min_stakes} stakes gives {tier.tickets} tickets; "
                "a higher tier must give at least as many."
            )
        if tier.min_stakes > new.min_stakes and tier.tickets < new.tickets:
            return (
                f"The tier at {tier.min_stakes} stakes gives {tier.tickets} tickets; "
                "a lower tier cannot give more."
            )
    return None


# --- what a backer or studio may do (the pages show exactly these) ------------------------


class TicketAction(StrEnum):
    """What the ticket page offers. A StrEnum: templates test `"book" in actions`."""

    BOOK = "book"
    #: Move the booking to another screening (until the booked one starts).
    REBOOK = "rebook"
    #: Give the booking up (until the booked screening starts).
    UNBOOK = "unbook"


def ticket_actions(status: str, booked_starts_at: datetime | None, now: datetime) -> frozenset[TicketAction]:
    """`booked_starts_at`: when the booked screening starts (None if none is booked).
    A started screening's bookings are final (rewards.bookings.book_ticket, cancel_booking)."""
    current = TicketStatus(status)
    allowed = TICKET_TRANSITIONS[current]
    if current is TicketStatus.ISSUED:
        return frozenset({TicketAction.BOOK}) if TicketStatus.BOOKED in allowed else frozenset()
    if current is TicketStatus.BOOKED and booked_starts_at is not None and booked_starts_at > now:
        actions = set()
        if TicketStatus.BOOKED in allowed:
            actions.add(TicketAction.REBOOK)
        if TicketStatus.ISSUED in allowed:
            actions.add(TicketAction.UNBOOK)
        return frozenset(actions)
    return frozenset()


def is_booked(status: str) -> bool:
    """The page then speaks of changing the screening rather than booking one."""
    return status == TicketStatus.BOOKED


def is_redeemed(status: str) -> bool:
    return status == TicketStatus.REDEEMED


def is_void(status: str) -> bool:
    return status == TicketStatus.VOID


class TierAction(StrEnum):
    #: Add and remove reward tiers: a draft's only (rewards.tiers.add_tier, remove_tier).
    EDIT_TIERS = "edit_tiers"


#: Tiers are part of the terms: fixed once the film is submitted.
TIER_EDITABLE_STATES = frozenset({FilmState.DRAFT})


def tier_actions(film_state: str) -> frozenset[TierAction]:
    return (
        frozenset({TierAction.EDIT_TIERS}) if FilmState(film_state) in TIER_EDITABLE_STATES else frozenset()
    )

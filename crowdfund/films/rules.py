"""Rules a film's fields must follow. Pure: no database, no Flask."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from crowdfund.films.states import FILM_TRANSITIONS, PUBLIC_STATES, FilmState
from crowdfund.text import TextProblem, multi_line, single_line

MIN_FUNDING_WINDOW = timedelta(days=1)
MAX_FUNDING_WINDOW = timedelta(days=366)
MAX_STAKE_CAP = 1_000_000
MIN_STAKE_PRICE_CENTS = 100
MAX_STAKE_PRICE_CENTS = 1_000_000
DEFAULT_STAKE_PRICE_CENTS = 5000


@dataclass
class FilmInput:
    title: str
    logline: str
    synopsis: str
    risks: str
    funding_goal_cents: int
    stake_price_cents: int
    stake_cap: int
    per_backer_limit: int
    deadline: datetime  # aware, UTC
    timezone: str
    expected_release_date: date
    recoup_share_bps: int
    recoup_multiple_bps: int
    profit_share_bps: int


#: The text fields of a film (label in messages) and how each is kept.
SINGLE_LINE_FIELDS = {"title": "The title", "logline": "The logline"}
MULTI_LINE_FIELDS = {"synopsis": "The synopsis", "risks": "The risks"}
TEXT_LIMITS = {"title": 120, "logline": 200, "synopsis": 20_000, "risks": 20_000}
_REQUIRED_TEXT = {
    "title": "Enter a title.",
    "logline": "Enter a logline: one sentence about the film.",
    "synopsis": "Enter a synopsis.",
}


def _cleaned_text(data: FilmInput) -> tuple[dict[str, str], dict[str, str]]:
    """(field -> text as stored, field -> problem) for the text fields."""
    cleaned: dict[str, str] = {}
    problems: dict[str, str] = {}
    for names, clean in ((SINGLE_LINE_FIELDS, single_line), (MULTI_LINE_FIELDS, multi_line)):
        for name, label in names.items():
            try:
                cleaned[name] = clean(getattr(data, name), label)
            except TextProblem as exc:
                problems[name] = exc.message
    return cleaned, problems


def clean_film_text(data: FilmInput) -> FilmInput:
    """`data` with its text as stored (crowdfund.text): NFC, stripped, LF line
    breaks. Only for input film_input_problems found valid."""
    cleaned, problems = _cleaned_text(data)
    if problems:
        raise ValueError(problems)
    # Any: the names come from the text-field tables, which mypy cannot match to FilmInput's fields.
    text_fields: dict[str, Any] = cleaned
    return replace(data, **text_fields)


#: Rules of film_input_problems that read other fields besides their own.
RULE_READS = {
    "per_backer_limit": {"stake_cap"},
    "funding_goal": {"stake_cap", "stake_price"},
    "expected_release_date": {"deadline", "timezone"},
}


def film_input_problems(data: FilmInput) -> dict[str, str]:
    """Field -> message for every rule the input breaks (empty when valid)."""
    cleaned, problems = _cleaned_text(data)
    for name, text in cleaned.items():
        if not text and name in _REQUIRED_TEXT:
            problems[name] = _REQUIRED_TEXT[name]
        elif len(text) > TEXT_LIMITS[name]:
            problems[name] = f"Use at most {TEXT_LIMITS[name]:,} characters."
    if not MIN_STAKE_PRICE_CENTS <= data.stake_price_cents <= MAX_STAKE_PRICE_CENTS:
        problems["stake_price"] = "A stake costs between $1.00 and $10,000.00."
    if not 1 <= data.stake_cap <= MAX_STAKE_CAP:
        problems["stake_cap"] = f"The cap is between 1 and {MAX_STAKE_CAP:,} stakes."
    if not 1 <= data.per_backer_limit <= max(data.stake_cap, 1):
        problems["per_backer_limit"] = "Each backer may buy between 1 stake and the cap."
    if data.funding_goal_cents <= 0:
        problems["funding_goal"] = "Enter a funding goal above zero."
    elif (
        "stake_price" not in problems
        and "stake_cap" not in problems
        and data.funding_goal_cents > data.stake_cap * data.stake_price_cents
    ):
        problems["funding_goal"] = (
            "The goal cannot be reached: it is more than the cap times the stake price."
        )
    if not 0 < data.recoup_share_bps <= 10_000:
        problems["recoup_share"] = "The recoupment share is above 0% and at most 100%."
    if not 0 <= data.recoup_multiple_bps <= 100_000:
        problems["recoup_multiple"] = "The recoupment multiple is between 0 and 10."
    if not 0 <= data.profit_share_bps <= 10_000:
        problems["profit_share"] = "The profit share is between 0% and 100%."
    if data.expected_release_date <= data.deadline.date():
        problems["expected_release_date"] = "The release comes after the funding deadline."
    return problems


def deadline_problem(deadline: datetime, now: datetime) -> str | None:
    """Why a deadline cannot open for funding now, or None."""
    if deadline < now + MIN_FUNDING_WINDOW:
        return "The funding deadline must be at least a day away."
    if deadline > now + MAX_FUNDING_WINDOW:
        return "The funding deadline must be within a year."
    return None


def time_left_text(deadline: datetime, now: datetime) -> str:
    """ "12 days left", "5 hours left", "40 minutes left" or "Ended"."""
    remaining = deadline - now
    seconds = int(remaining.total_seconds())
    if seconds <= 0:
        return "Ended"
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days left"
    if seconds >= 2 * 3600:
        return f"{seconds // 3600} hours left"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''} left"


def percent_funded(raised_cents: int, goal_cents: int) -> int:
    """Whole percent of the goal raised; may pass 100 (the bar caps, the text does not)."""
    return raised_cents * 100 // goal_cents if goal_cents > 0 else 0


# --- what a person may do with a film (the pages show exactly these) ---------------------


class FilmAction(StrEnum):
    """What the studio's film page and the admin's review page offer. A StrEnum:
    templates test `"release" in actions`."""

    EDIT = "edit"
    SUBMIT = "submit"
    WITHDRAW = "withdraw"
    RELEASE = "release"
    CLOSE = "close"
    #: The film's box-office reports page (filed once it is released).
    BOX_OFFICE = "box_office"
    #: The film has a public page and funding figures; before that only a preview.
    PUBLIC_PAGE = "public_page"
    APPROVE = "approve"
    SEND_BACK = "send_back"
    CANCEL = "cancel"


@dataclass(frozen=True)
class FilmMove:
    """A move a person makes: the state it leads to, and the states it is offered
    from (None: every state FILM_TRANSITIONS lets reach `target`). Offered only
    where the table allows it as well."""

    target: FilmState
    sources: frozenset[FilmState] | None = None


#: The studio's moves (films.services.submit_for_review, withdraw, mark_released, close_film).
STUDIO_MOVES: Mapping[FilmAction, FilmMove] = {
    FilmAction.SUBMIT: FilmMove(FilmState.IN_REVIEW),
    # A studio withdraws before the review decides; cancelling an open film is the admin's.
    FilmAction.WITHDRAW: FilmMove(FilmState.CANCELLED, frozenset({FilmState.DRAFT, FilmState.IN_REVIEW})),
    FilmAction.RELEASE: FilmMove(FilmState.RELEASED),
    FilmAction.CLOSE: FilmMove(FilmState.CLOSED),
}
#: The admin's moves (films.services.approve, send_back, cancel_film).
REVIEW_MOVES: Mapping[FilmAction, FilmMove] = {
    FilmAction.APPROVE: FilmMove(FilmState.FUNDING),
    FilmAction.SEND_BACK: FilmMove(FilmState.DRAFT),
    FilmAction.CANCEL: FilmMove(FilmState.CANCELLED),
}
#: Only drafts are edited (films.services.update_film): the terms are fixed once submitted.
EDITABLE_STATES = frozenset({FilmState.DRAFT})


def reachable_from(state: FilmState) -> frozenset[FilmState]:
    """`state` and every state the table leads to from it."""
    seen = {state}
    todo = [state]
    while todo:
        for target in FILM_TRANSITIONS[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return frozenset(seen)


#: A funded film's later life: box-office reports belong to it.
FUNDED_AND_AFTER = reachable_from(FilmState.FUNDED)
#: Before the round is decided, funding is still to end (or ending).
UNDECIDED_STATES = frozenset({FilmState.DRAFT, FilmState.IN_REVIEW, FilmState.FUNDING})


def offered_moves(moves: Mapping[FilmAction, FilmMove], state: str) -> frozenset[FilmAction]:
    """The moves of `moves` a film in `state` may make: allowed by the table and offered from there."""
    current = FilmState(state)
    allowed = FILM_TRANSITIONS[current]
    return frozenset(
        action
        for action, move in moves.items()
        if move.target in allowed and (move.sources is None or current in move.sources)
    )


def studio_actions(state: str) -> frozenset[FilmAction]:
    """What the studio's page offers for a film in `state`."""
    current = FilmState(state)
    actions = set(offered_moves(STUDIO_MOVES, current))
    if current in EDITABLE_STATES:
        actions.add(FilmAction.EDIT)
    if current in FUNDED_AND_AFTER:
        actions.add(FilmAction.BOX_OFFICE)
    if current in PUBLIC_STATES:
        actions.add(FilmAction.PUBLIC_PAGE)
    return frozenset(actions)


def review_actions(
    state: str, film_studio_id: int | None, reviewer_studio_id: int | None
) -> frozenset[FilmAction]:
    """What the review page offers an admin. A member of the film's studio may
    send it back or cancel it, never approve it (another admin must)."""
    actions = offered_moves(REVIEW_MOVES, state)
    if reviewer_studio_id and reviewer_studio_id == film_studio_id:
        actions -= {FilmAction.APPROVE}
    return actions


def funding_time_left(state: str, deadline: datetime, now: datetime) -> str | None:
    """ "12 days left" (or "Ended") while the film is open for funding, else None."""
    return time_left_text(deadline, now) if state == FilmState.FUNDING else None


def funding_end_word(state: str, deadline: datetime, now: datetime) -> str:
    """ "Funding ends ..." or "Funding ended ...", as the film page says it."""
    return "ends" if state in UNDECIDED_STATES and deadline > now else "ended"


def was_cancelled(state: str) -> bool:
    """A cancelled film's banner says so; a failed one's says the goal was missed."""
    return state == FilmState.CANCELLED

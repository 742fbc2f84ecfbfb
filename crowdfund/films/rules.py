"""Rules a film's fields must follow. Pure: no database, no Flask."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

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


def film_input_problems(data: FilmInput) -> dict[str, str]:
    """Field -> message for every rule the input breaks (empty when valid)."""
    problems: dict[str, str] = {}
    if not data.title.strip():
        problems["title"] = "Enter a title."
    elif len(data.title) > 120:
        problems["title"] = "Use at most 120 characters."
    if not data.logline.strip():
        problems["logline"] = "Enter a logline: one sentence about the film."
    elif len(data.logline) > 200:
        problems["logline"] = "Use at most 200 characters."
    if not data.synopsis.strip():
        problems["synopsis"] = "Enter a synopsis."
    elif len(data.synopsis) > 20_000:
        problems["synopsis"] = "Use at most 20,000 characters."
    if len(data.risks) > 20_000:
        problems["risks"] = "Use at most 20,000 characters."
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
    """"12 days left", "5 hours left", "40 minutes left" or "Ended"."""
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

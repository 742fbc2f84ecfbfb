from datetime import UTC, datetime, timedelta

import pytest

from crowdfund import transitions
from crowdfund.errors import InvalidTransition
from crowdfund.films.rules import deadline_problem, film_input_problems, percent_funded, time_left_text
from crowdfund.films.services import FILM
from crowdfund.films.states import FILM_TRANSITIONS, FilmState
from crowdfund.films.terms import describe_terms
from tests.factories import film_input

ALLOWED = {(a, b) for a, targets in FILM_TRANSITIONS.items() for b in targets}


@pytest.mark.parametrize("current", list(FilmState))
@pytest.mark.parametrize("target", list(FilmState))
def test_film_transitions_follow_design(current: FilmState, target: FilmState) -> None:
    design = {
        ("draft", "in_review"),
        ("in_review", "draft"),
        ("in_review", "funding"),
        ("funding", "funded"),
        ("funding", "failed"),
        ("funded", "released"),
        ("released", "closed"),
        ("draft", "cancelled"),
        ("in_review", "cancelled"),
        ("funding", "cancelled"),
    }
    if (current.value, target.value) in design:
        transitions.check(FILM, current, target)
    else:
        with pytest.raises(InvalidTransition):
            transitions.check(FILM, current, target)


def test_valid_input_has_no_problems() -> None:
    assert film_input_problems(film_input()) == {}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"title": "  "}, "title"),
        ({"title": "x" * 121}, "title"),
        ({"stake_price_cents": 50}, "stake_price"),
        ({"stake_cap": 0}, "stake_cap"),
        ({"per_backer_limit": 101}, "per_backer_limit"),
        ({"funding_goal_cents": 100 * 5000 + 1}, "funding_goal"),
        ({"funding_goal_cents": 0}, "funding_goal"),
        ({"recoup_share_bps": 0}, "recoup_share"),
        ({"recoup_share_bps": 10001}, "recoup_share"),
        ({"recoup_multiple_bps": 100001}, "recoup_multiple"),
        ({"profit_share_bps": -1}, "profit_share"),
    ],
)
def test_input_problems(overrides: dict, field: str) -> None:
    assert field in film_input_problems(film_input(**overrides))


def test_release_after_deadline() -> None:
    data = film_input()
    data.expected_release_date = data.deadline.date()
    assert "expected_release_date" in film_input_problems(data)


def test_deadline_window() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert deadline_problem(now + timedelta(hours=23), now)
    assert deadline_problem(now + timedelta(days=367), now)
    assert deadline_problem(now + timedelta(days=2), now) is None


def test_time_left_and_percent() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert time_left_text(now + timedelta(days=3, hours=1), now) == "3 days left"
    assert time_left_text(now + timedelta(hours=30), now) == "30 hours left"
    assert time_left_text(now + timedelta(minutes=1), now) == "1 minute left"
    assert time_left_text(now, now) == "Ended"
    assert percent_funded(150, 100) == 150
    assert percent_funded(99, 100) == 99


def test_terms_in_plain_words() -> None:
    lines = describe_terms(5000, 12000, 1000, 2_500_000)
    assert "1.2x what they put in ($30,000.00 if the film raises exactly its goal)" in lines[0]
    assert "50% of the film's net box-office receipts" in lines[0]
    assert lines[1] == "After that, backers share 10% of net receipts."
    no_recoup = describe_terms(5000, 0, 2500, 100)
    assert no_recoup[0] == "Backers share 25% of the film's net box-office receipts."

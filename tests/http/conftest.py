"""Fixtures the HTTP tests share."""

from __future__ import annotations

import pytest

from crowdfund.films.states import FilmState
from tests.conftest import CheckSession
from tests.factories import make_film, make_studio_user


@pytest.fixture
def film(db: CheckSession):  # type: ignore[no-untyped-def]
    """A film open for funding: 20 stakes, 5 per backer, a $500 goal."""
    return make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        title="Night Ferry",
        stake_cap=20,
        per_backer_limit=5,
        funding_goal_cents=50_000,
    )

"""Failure isolation for batch jobs (round close, hold release, payout runs).

A job works unit by unit (a film, an order, a payout run). A unit that raises
is rolled back on its own, logged with its traceback and reported; the job
carries on with the next unit, and its command exits non-zero at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class UnitFailure:
    #: What failed, as an operator finds it: "film 12", "order R-7KQ2...", "payout run 3".
    unit: str
    error: str

    def __str__(self) -> str:
        return f"{self.unit}: {self.error}"


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def in_own_transaction(
    session: Session, unit: str, failures: list[UnitFailure], work: Callable[[], T]
) -> T | None:
    """Run `work` and commit it; if it raises, roll back only its transaction,
    record the failure and return None."""
    try:
        result = work()
        session.commit()
    except Exception as exc:  # one bad unit never stops the others
        session.rollback()
        log.exception("%s failed; the job goes on with the others", unit)
        failures.append(UnitFailure(unit, describe(exc)))
        return None
    return result


def in_savepoint(session: Session, unit: str, failures: list[UnitFailure], work: Callable[[], T]) -> T | None:
    """Run `work` in a SAVEPOINT of the caller's transaction; if it raises,
    only the savepoint is rolled back and the failure recorded."""
    try:
        with session.begin_nested():
            return work()
    except Exception as exc:
        log.exception("%s failed; the job goes on with the others", unit)
        failures.append(UnitFailure(unit, describe(exc)))
        return None

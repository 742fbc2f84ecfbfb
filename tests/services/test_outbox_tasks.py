"""The outbox of work (crowdfund/outbox/): rows commit with the change that
asks for them, are handed on only after commit, run once per claim, retried
with backoff, failed after the last attempt, and swept on when lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdfund.outbox.running import (
    RunSettings,
    lost_task_ids,
    retry_failed_task,
    run_pending,
    run_task,
    sweep,
)
from crowdfund.outbox.tasks import Handoff, OutboxTask, enqueue
from crowdfund.site.web import app_services
from tests.conftest import CheckSession

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = RunSettings(lease=timedelta(minutes=10), max_attempts=3, backoff=timedelta(seconds=30))


@pytest.fixture
def handed(app: Flask) -> Iterator[list[tuple[int, float]]]:
    """What the app hands to the queue, recorded instead of sent."""
    handoff = app_services(app).handoff
    before = handoff.send_task
    sent: list[tuple[int, float]] = []
    handoff.send_task = lambda task_id, countdown: sent.append((task_id, countdown))
    yield sent
    handoff.send_task = before


def rows(db: Session) -> list[tuple[str, str, int]]:
    return [(t.key, t.status, t.attempts) for t in db.scalars(select(OutboxTask).order_by(OutboxTask.id))]


def test_a_row_is_handed_on_only_after_its_transaction_commits(db: CheckSession, handed) -> None:  # type: ignore[no-untyped-def]
    with db.begin_nested():
        assert enqueue(db, "test.kind", "k-1", now=NOW, n=1)
    assert handed == []  # a released SAVEPOINT is no commit
    db.commit()
    [task_id] = db.scalars(select(OutboxTask.id))
    assert handed == [(task_id, 0)]


def test_asking_twice_for_the_same_work_adds_one_row(db: CheckSession, handed) -> None:  # type: ignore[no-untyped-def]
    assert enqueue(db, "test.kind", "same", now=NOW) is True
    assert enqueue(db, "test.kind", "same", now=NOW) is False
    db.commit()
    assert db.scalar(select(func.count()).select_from(OutboxTask)) == 1 and len(handed) == 1


def test_rolled_back_work_leaves_no_row_and_hands_nothing_on(db: CheckSession, handed) -> None:  # type: ignore[no-untyped-def]
    enqueue(db, "test.kind", "gone", now=NOW)
    db.rollback()
    db.commit()
    assert rows(db) == [] and handed == []


def test_a_row_runs_once_and_its_arguments_reach_the_handler(db: CheckSession) -> None:
    seen: list[Mapping[str, Any]] = []
    handlers = {"test.kind": lambda session, args: seen.append(args) or len(seen)}
    enqueue(db, "test.kind", "once", now=NOW, film_id=7)
    db.commit()
    [task_id] = db.scalars(select(OutboxTask.id))
    first = run_task(db, task_id, handlers, now=lambda: NOW, settings=SETTINGS)
    again = run_task(db, task_id, handlers, now=lambda: NOW, settings=SETTINGS)  # a redelivered message
    assert (first.result, first.value, again.result) == ("done", 1, "skipped")
    assert seen == [{"film_id": 7}] and rows(db) == [("once", "done", 1)]


def test_a_failing_handler_is_retried_with_backoff_then_failed_then_retried_by_an_admin(
    db: CheckSession,
) -> None:
    calls: list[int] = []

    def flaky(session: Session, args: Mapping[str, Any]) -> None:
        calls.append(1)
        raise RuntimeError("Stripe is away")

    enqueue(db, "test.kind", "flaky", now=NOW)
    db.commit()
    [task_id] = db.scalars(select(OutboxTask.id))
    first = run_task(db, task_id, {"test.kind": flaky}, now=lambda: NOW, settings=SETTINGS)
    assert (first.result, first.retry_in, first.error) == ("retry", 30, "RuntimeError: Stripe is away")
    # Not due again before its backoff.
    assert run_task(db, task_id, {"test.kind": flaky}, now=lambda: NOW, settings=SETTINGS).result == "skipped"
    second = run_task(
        db, task_id, {"test.kind": flaky}, now=lambda: NOW + timedelta(seconds=31), settings=SETTINGS
    )
    assert (second.result, second.retry_in) == ("retry", 60)  # doubled
    third = run_task(
        db, task_id, {"test.kind": flaky}, now=lambda: NOW + timedelta(minutes=5), settings=SETTINGS
    )
    assert third.result == "failed" and len(calls) == 3
    db.reread()
    task = db.get(OutboxTask, task_id)
    assert (task.status, task.attempts, task.last_error) == ("failed", 3, "RuntimeError: Stripe is away")
    assert retry_failed_task(db, task_id, now=NOW + timedelta(hours=1))
    assert not retry_failed_task(db, task_id, now=NOW + timedelta(hours=1))  # pending now, not failed
    db.commit()
    db.reread()
    assert rows(db) == [("flaky", "pending", 0)]


def test_the_sweep_hands_on_rows_never_handed_and_rows_whose_worker_died(db: CheckSession) -> None:
    for key in ("lost", "fresh", "running"):
        enqueue(db, "test.kind", key, now=NOW)
    db.commit()
    ids = dict(db.execute(select(OutboxTask.key, OutboxTask.id)).all())
    fresh = db.get(OutboxTask, ids["fresh"])
    fresh.next_attempt_at = NOW + timedelta(minutes=4)  # due later than the others
    db.commit()
    # A worker claims "running" and dies (nothing records the end).
    from crowdfund.outbox.running import claim

    assert claim(db, ids["running"], now=NOW, settings=SETTINGS) is not None
    sent: list[int] = []
    handoff = Handoff(send_task=lambda task_id, countdown: sent.append(task_id))
    after = timedelta(minutes=5)
    early = sweep(db, handoff, now=NOW + timedelta(minutes=6), after=after)
    assert early.handed == [ids["lost"]]  # the running row's lease (10 min) has not lapsed
    # "fresh" is now due for longer than the interval, the dead worker's lease has lapsed,
    # and "lost" was handed on 4.5 minutes ago: not again yet.
    late = sweep(db, handoff, now=NOW + timedelta(minutes=10, seconds=30), after=after)
    assert late.handed == [ids["fresh"], ids["running"]]
    assert sent == [ids["lost"], ids["fresh"], ids["running"]]
    assert lost_task_ids(db, NOW + timedelta(minutes=11), after=after) == [ids["lost"]]


def test_run_pending_runs_the_rows_handlers_add(db: CheckSession) -> None:
    def chain(session: Session, args: Mapping[str, Any]) -> int:
        step = int(args["step"])
        if step < 3:
            enqueue(session, "test.chain", f"chain:{step + 1}", now=NOW, step=step + 1)
            session.commit()
        return step

    enqueue(db, "test.chain", "chain:1", now=NOW, step=1)
    db.commit()
    outcomes = run_pending(db, {"test.chain": chain}, now=lambda: NOW, settings=SETTINGS)
    assert [o.value for o in outcomes] == [1, 2, 3]
    assert [status for _k, status, _a in rows(db)] == ["done"] * 3


def test_a_broker_that_is_away_fails_no_commit(db: CheckSession, app: Flask) -> None:
    handoff = app_services(app).handoff
    before = handoff.send_task

    def away(task_id: int, countdown: float) -> None:
        raise ConnectionError("broker unreachable")

    handoff.send_task = away
    try:
        enqueue(db, "test.kind", "kept", now=NOW)
        db.commit()  # the hand-off fails after commit: logged, the row stays for the sweep
    finally:
        handoff.send_task = before
    assert rows(db) == [("kept", "pending", 0)]


def test_the_jobs_commands_run_due_rows_by_hand_and_name_what_failed(db: CheckSession, app: Flask) -> None:
    now = datetime.now(UTC)
    enqueue(db, "refunds.order", "refund-order:0", now=now, order_id=0)  # no such order: nothing to refund
    enqueue(db, "no.such.kind", "unknown", now=now)
    db.commit()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["jobs", "run-pending"])
    assert result.exit_code == 1, result.output
    assert "done: 1, retry: 1" in result.output and "(no.such.kind): KeyError" in result.output
    assert (
        runner.invoke(args=["jobs", "run-pending"]).output.strip() == "nothing due"
    )  # the retry waits its backoff
    assert runner.invoke(args=["jobs", "sweep"]).exit_code == 0


@pytest.mark.committing  # threads on connections of their own
@pytest.mark.parametrize("workers", [4])
def test_of_workers_running_one_row_at_once_exactly_one_runs_it(
    db: CheckSession, app: Flask, workers: int
) -> None:
    """A redelivered message and the sweep can hand one row to several
    workers at the same moment: the claim lets exactly one run it."""
    enqueue(db, "test.kind", "contended", now=NOW)
    db.commit()
    [task_id] = db.scalars(select(OutboxTask.id))
    ran: list[int] = []
    start = threading.Barrier(workers)
    results: list[str] = []

    def handler(session: Session, args: Mapping[str, Any]) -> None:
        ran.append(1)
        time.sleep(0.2)  # still running while the others try

    def worker() -> None:
        with app_services(app).sessions() as session:
            start.wait()
            results.append(run_task(session, task_id, {"test.kind": handler}, now=lambda: NOW).result)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["done"] + ["skipped"] * (workers - 1)
    assert len(ran) == 1
    db.reread()
    assert rows(db) == [("contended", "done", 1)]

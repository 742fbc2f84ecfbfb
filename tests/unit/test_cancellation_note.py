"""cancellation_note: what a buyer is told about cancelling before they pay."""

from datetime import UTC, datetime, timedelta

from crowdfund.funding.rules import cancellation_note

DEADLINE = datetime(2026, 12, 20, 18, 0, tzinfo=UTC)
HOLD = timedelta(minutes=15)


def test_ten_days_out_the_window_is_open() -> None:
    now = DEADLINE - timedelta(days=10)
    note = cancellation_note(DEADLINE, now, pay_by=now + HOLD)
    assert (note.state, note.until, note.cutoff_hours, note.cancellable) == (
        "open",
        DEADLINE - timedelta(hours=48),
        48,
        True,
    )


def test_thirty_hours_out_it_cannot_be_cancelled() -> None:
    now = DEADLINE - timedelta(hours=30)
    note = cancellation_note(DEADLINE, now, pay_by=now + HOLD)
    assert note.state == "closed" and not note.cancellable


def test_exactly_at_the_cutoff_it_is_closed() -> None:
    assert cancellation_note(DEADLINE, DEADLINE - timedelta(hours=48)).state == "closed"


def test_the_window_closing_while_the_hold_lasts_is_said() -> None:
    now = DEADLINE - timedelta(hours=48, minutes=5)
    assert cancellation_note(DEADLINE, now, pay_by=now + HOLD).state == "closing"
    assert cancellation_note(DEADLINE, now).state == "open"

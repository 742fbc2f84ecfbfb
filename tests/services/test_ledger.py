"""ledger.post books only entries named by an EntryKind, keyed by that kind's
builder, on accounts the Account builders make; anything else is refused
before anything is written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from crowdfund import ledger
from crowdfund.ledger import Account, EntryKind, JournalEntry
from tests.conftest import CheckSession

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LINES = [(Account.BACKER_CASH, 500), (Account.UNMATCHED_PAYMENTS, -500)]


def entries(db: CheckSession) -> int:
    return int(db.scalar(select(func.count()).select_from(JournalEntry)) or 0)


@pytest.mark.parametrize("kind", ["unmatched_payment", "bogus", "", None])
def test_post_refuses_a_kind_that_is_not_an_entry_kind(db: CheckSession, kind: object) -> None:
    # Even the string of a real kind: callers name kinds by the enum only.
    with pytest.raises(ValueError, match="not an entry kind"):
        ledger.post(db, key="unmatched-payment:1", kind=kind, lines=LINES, now=NOW)  # type: ignore[arg-type]
    assert entries(db) == 0


def test_post_refuses_a_key_of_another_kind(db: CheckSession) -> None:
    with pytest.raises(ValueError, match="is not a unmatched_payment key"):
        ledger.post(
            db, key=EntryKind.UNMATCHED_REFUND.key(1), kind=EntryKind.UNMATCHED_PAYMENT, lines=LINES, now=NOW
        )
    assert entries(db) == 0


def test_post_refuses_an_account_no_builder_makes(db: CheckSession) -> None:
    with pytest.raises(ValueError, match="not an account"):
        ledger.post(
            db,
            key=EntryKind.UNMATCHED_PAYMENT.key(1),
            kind=EntryKind.UNMATCHED_PAYMENT,
            lines=[(Account.BACKER_CASH, 500), ("unmatched", -500)],
            now=NOW,
        )
    assert entries(db) == 0


def test_post_stores_the_historical_strings(db: CheckSession) -> None:
    ledger.post(
        db, key=EntryKind.UNMATCHED_PAYMENT.key(1), kind=EntryKind.UNMATCHED_PAYMENT, lines=LINES, now=NOW
    )
    db.commit()
    db.expire_all()
    entry = db.scalars(select(JournalEntry)).one()
    assert (entry.kind, entry.key) == ("unmatched_payment", "unmatched-payment:1")
    assert [(line.account, line.amount_cents) for line in entry.lines] == [
        ("backer_cash", 500),
        ("unmatched_payments", -500),
    ]
    assert ledger.has_entry(db, "unmatched-payment:1")
    assert ledger.balance(db, "backer_cash") == 500 and ledger.trial_balance(db) == 0

"""The transaction steps of the workflows that call Stripe.

A workflow owns its transactions; the domains below it only flush. No
transaction is open while Stripe is asked anything (on SQLite an open write
transaction is the database's one write lock; on PostgreSQL it keeps row
locks and a connection idle in transaction). What must be on record before
Stripe acts (the PaymentIntent id before the charge, the refund claim before
the refund) is committed first; reads before a call end before it; what
Stripe answered is written in a new transaction whose statements re-check
the state they change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from crowdfund.db import sqlite_begin


def end_transaction(session: Session) -> None:
    """Nothing stays open across a call to Stripe: commit what this step has
    written (nothing, after a read)."""
    if session.in_transaction():
        session.commit()


@contextmanager
def reading(session: Session) -> Iterator[None]:
    """Reads before a call to Stripe: DEFERRED on SQLite (waits for no
    writer), and over before Stripe is called."""
    end_transaction(session)
    with sqlite_begin("DEFERRED"):
        yield
    end_transaction(session)


@contextmanager
def writing(session: Session) -> Iterator[None]:
    """One transaction that writes, committed at the end of the block.
    IMMEDIATE on SQLite: it queues for the write lock at BEGIN rather than fail
    to upgrade a read that another writer made stale."""
    end_transaction(session)
    with sqlite_begin("IMMEDIATE"):
        yield
    session.commit()

"""Rewards services. Hook points called by funding (stubs until issue 5 lands)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session


def issue_tickets(session: Session, film_id: int, *, now: datetime) -> int:
    """Called in the transaction that makes a film funded. Returns tickets issued."""
    return 0


def void_unbooked_tickets(session: Session, film_id: int, user_id: int, *, now: datetime) -> int:
    """Called in the transaction that refunds or cancels a backer's paid order."""
    return 0

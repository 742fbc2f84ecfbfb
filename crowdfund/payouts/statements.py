"""Payout statements: announcing them to backers, a backer's own statements,
what was paid to them, and the run's export.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.errors import NotFound
from crowdfund.films.models import Film
from crowdfund.mail.outbox import queue_email
from crowdfund.payouts.models import PayoutRun, PayoutStatement, RunStatus


def announce_batch(
    session: Session, run_id: int, *, after: int = -1, batch_size: int = 1000
) -> tuple[int, int] | None:
    """Queue one e-mail per statement of the run after position `after`, for
    the next `batch_size` statements (keyed, so a rerun sends nothing twice).
    Returns (e-mails queued, the last position announced), or None when no
    statement is left."""
    rows = session.execute(
        select(
            PayoutStatement.id,
            PayoutStatement.number,
            PayoutStatement.amount_cents,
            User.email,
            User.display_name,
            User.time_zone,
            Film.title,
            PayoutStatement.position,
        )
        .join(User, User.id == PayoutStatement.user_id)
        .join(PayoutRun, PayoutRun.id == PayoutStatement.run_id)
        .join(Film, Film.id == PayoutRun.film_id)
        .where(PayoutStatement.run_id == run_id, PayoutStatement.position > after)
        .order_by(PayoutStatement.position)
        .limit(batch_size)
    ).all()
    if not rows:
        return None
    sent = 0
    for statement_id, number, amount, email, name, time_zone, title, position in rows:
        sent += queue_email(
            session,
            key=f"statement:{statement_id}",
            to=email,
            template="statement_ready",
            number=number,
            amount_cents=amount,
            name=name,
            film_title=title,
            statement_id=statement_id,
            payment_status="computed (not yet paid)",
            tz=time_zone,
        )
        after = position
    return sent, after


def own_statement(session: Session, user: User, statement_id: int) -> PayoutStatement:
    statement = session.get(PayoutStatement, statement_id)
    if statement is None or statement.user_id != user.id:
        raise NotFound("No such statement.")
    return statement


def user_statements(session: Session, user_id: int) -> list[PayoutStatement]:
    return list(
        session.scalars(
            select(PayoutStatement)
            .where(PayoutStatement.user_id == user_id)
            .order_by(PayoutStatement.created_at.desc(), PayoutStatement.id.desc())
        )
    )


def paid_to_user(session: Session, user_id: int, film_ids: list[int]) -> dict[int, int]:
    """Per film, what the user's statements of runs marked paid add up to:
    computed runs are owed, not paid, and count for nothing here."""
    if not film_ids:
        return {}
    rows = session.execute(
        select(PayoutRun.film_id, func.sum(PayoutStatement.amount_cents))
        .join(PayoutRun, PayoutRun.id == PayoutStatement.run_id)
        .where(
            PayoutStatement.user_id == user_id,
            PayoutRun.status == RunStatus.PAID,
            PayoutRun.film_id.in_(film_ids),
        )
        .group_by(PayoutRun.film_id)
    ).all()
    paid = {film_id: 0 for film_id in film_ids}
    paid.update({film_id: int(total) for film_id, total in rows})
    return paid


def export_rows(
    session: Session, run_id: int, batch_size: int = 5000
) -> Iterator[tuple[str, int, str, str, int, int]]:
    """(number, backer id, name, e-mail, stakes, amount cents) per statement, streamed."""
    statement = (
        select(
            PayoutStatement.number,
            User.id,
            User.display_name,
            User.email,
            PayoutStatement.stakes,
            PayoutStatement.amount_cents,
        )
        .join(User, User.id == PayoutStatement.user_id)
        .where(PayoutStatement.run_id == run_id)
        .order_by(PayoutStatement.position)
        .execution_options(yield_per=batch_size)
    )
    for number, user_id, name, email, stakes, amount in session.execute(statement):
        yield number, user_id, name, email, int(stakes), int(amount)

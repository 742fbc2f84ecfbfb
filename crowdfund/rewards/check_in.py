"""Check-in at the door: a ticket code admitted to its screening once, every
attempt logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund import audit
from crowdfund.accounts.models import User
from crowdfund.errors import DomainError, NotFound
from crowdfund.rewards.models import CheckInAttempt, CheckInResult, Screening, Ticket, TicketStatus
from crowdfund.rewards.rules import format_code, normalise_code
from crowdfund.rewards.tickets import move_ticket


@dataclass(frozen=True)
class CheckIn:
    result: CheckInResult
    message: str
    ticket: Ticket | None

    @property
    def admitted(self) -> bool:
        return self.result == CheckInResult.ADMITTED


def _where(screening: Screening | None, zone: str) -> str:
    if screening is None:
        return "an unknown screening"
    return (
        f"{screening.cinema}, {screening.city}, "
        f"{screening.starts_at.astimezone(ZoneInfo(zone)).strftime('%d %b %Y %H:%M %Z')}"
    )


def redeem_ticket(
    session: Session, staff: User, screening: Screening, raw_code: str, *, now: datetime
) -> CheckIn:
    """Admit the holder of `raw_code` to `screening` once. Every attempt is
    logged, admitted or not; refusals are an answer, not an error."""
    if screening.film.studio_id != staff.studio_id:
        raise NotFound("No such screening.")
    code = normalise_code(raw_code)
    if not code:
        raise DomainError("Enter or scan a ticket code.", field="code")
    zone = screening.film.timezone
    ticket = session.scalar(select(Ticket).where(Ticket.code == code)) if len(code) <= 20 else None
    outcome: CheckIn
    if ticket is None:
        outcome = CheckIn(CheckInResult.UNKNOWN, "Refused: no ticket has this code.", None)
    elif ticket.film_id != screening.film_id:
        # Says nothing about the other film: codes are not a way to probe other studios.
        outcome = CheckIn(CheckInResult.OTHER_FILM, "Refused: this is not a ticket for this film.", None)
    elif ticket.status == TicketStatus.VOID:
        outcome = CheckIn(
            CheckInResult.VOID, "Refused: this ticket is void (its order was refunded).", ticket
        )
    elif ticket.status == TicketStatus.ISSUED:
        outcome = CheckIn(
            CheckInResult.NOT_BOOKED, "Refused: this ticket is not booked for any screening.", ticket
        )
    elif ticket.screening_id != screening.id:
        outcome = CheckIn(
            CheckInResult.OTHER_SCREENING,
            f"Refused: this ticket is for another screening ({_where(ticket.screening, zone)}).",
            ticket,
        )
    elif ticket.status == TicketStatus.REDEEMED:
        outcome = _already_used(ticket, zone)
    elif move_ticket(session, ticket, TicketStatus.REDEEMED, redeemed_at=now, redeemed_by_id=staff.id):
        outcome = CheckIn(CheckInResult.ADMITTED, f"Admitted: {format_code(code)}.", ticket)
    else:
        # Another door redeemed it a moment ago.
        outcome = (
            _already_used(ticket, zone)
            if ticket.status == TicketStatus.REDEEMED
            else CheckIn(CheckInResult.NOT_BOOKED, "Refused: this ticket changed meanwhile.", ticket)
        )
    session.add(
        CheckInAttempt(
            screening_id=screening.id,
            staff_id=staff.id,
            code=code,
            ticket_id=outcome.ticket.id if outcome.ticket else None,
            result=outcome.result.value,
            at=now,
        )
    )
    audit.record(
        session,
        action="ticket.check_in",
        object_type="screening",
        object_id=screening.id,
        now=now,
        actor=staff,
        after={"code": format_code(code), "result": outcome.result.value},
        detail=outcome.message,
    )
    session.flush()
    return outcome


def _already_used(ticket: Ticket, zone: str) -> CheckIn:
    assert ticket.redeemed_at is not None
    used = ticket.redeemed_at.astimezone(ZoneInfo(zone)).strftime("%d %b %Y %H:%M:%S %Z")
    return CheckIn(
        CheckInResult.ALREADY_USED,
        f"Refused: already used at {used} at {_where(ticket.screening, zone)}.",
        ticket,
    )


def check_in_log(session: Session, screening_id: int, limit: int = 50) -> list[CheckInAttempt]:
    return list(
        session.scalars(
            select(CheckInAttempt)
            .where(CheckInAttempt.screening_id == screening_id)
            .order_by(CheckInAttempt.at.desc(), CheckInAttempt.id.desc())
            .limit(limit)
        )
    )

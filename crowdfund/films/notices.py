"""The e-mails a studio gets about its film's review: approved (open for
funding) or sent back with the reviewer's note. Every member of the studio
gets one, in their time zone, with a link to the studio's page of the film.
Queued in the transaction of the review (crowdfund/mail/outbox.py)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund.accounts.models import StudioMember, User
from crowdfund.films.models import Film
from crowdfund.mail.outbox import queue_email


def queue_review_emails(session: Session, film: Film, *, approved: bool, note: str | None = None) -> int:
    """Tell each active member of the film's studio how its review went.
    Keyed per member: an approval happens once; a send-back once per
    submission (submitted_at), so each review round is told once."""
    members = session.execute(
        select(User.id, User.email, User.display_name, User.time_zone)
        .join(StudioMember, StudioMember.user_id == User.id)
        .where(StudioMember.studio_id == film.studio_id, User.is_active.is_(True))
        .order_by(User.id)
    ).all()
    submitted = film.submitted_at.strftime("%Y%m%d%H%M%S%f") if film.submitted_at else "-"
    round_key = "approved" if approved else f"sent-back:{submitted}"
    queued = 0
    for user_id, email, name, time_zone in members:
        queued += queue_email(
            session,
            key=f"film-review:{film.id}:{round_key}:{user_id}",
            to=email,
            template="film_approved" if approved else "film_sent_back",
            name=name,
            film=film,
            note=note or "",
            tz=time_zone,
        )
    return queued

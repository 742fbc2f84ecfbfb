"""Film services: drafts, review, the one state-change function, catalogue queries."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, fields
from datetime import datetime
from math import ceil

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, lazyload, load_only

from crowdfund import transitions
from crowdfund.accounts.models import User
from crowdfund.errors import Conflict, DomainError, Forbidden, NotFound
from crowdfund.films.models import Film, FilmEvent
from crowdfund.films.notices import queue_review_emails
from crowdfund.films.rules import FilmInput, clean_film_text, deadline_problem, film_input_problems
from crowdfund.films.states import FILM_TRANSITIONS, PUBLIC_STATES, STATE_LABELS, FilmState
from crowdfund.text import TextProblem, multi_line
from crowdfund.uploads import clean_image, store_file


class FilmInputError(DomainError):
    """Several fields are wrong at once; `problems` maps field -> message."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("Please correct the fields marked below.")
        self.problems = problems


class FilmChanged(Conflict):
    """Another transaction moved the film since it was read."""

    def __init__(self, state: str) -> None:
        super().__init__(
            f"This film changed meanwhile: it is now {STATE_LABELS[FilmState(state)].lower()}; "
            "reload the page."
        )
        self.state = state


def _film_event(
    film_id: int,
    from_state: str | None,
    to_state: str | None,
    actor_id: int | None,
    reason: str | None,
    now: datetime,
) -> FilmEvent:
    return FilmEvent(
        film_id=film_id, from_state=from_state, to_state=to_state, actor_id=actor_id, reason=reason, at=now
    )


FILM = transitions.Machine(
    name="film",
    model=Film,
    column="state",
    transitions=FILM_TRANSITIONS,
    audit_actions={state: "film.state" for state in FilmState},
    audit_object_type="film",
    history=_film_event,
    keep_loaded=True,
)


def change_film_state(
    session: Session,
    film: Film,
    target: FilmState,
    *,
    now: datetime,
    actor: User | None = None,
    reason: str | None = None,
) -> None:
    """The only way a film changes state: checks the transition, records it.

    The UPDATE is conditional on the state `film` was read in, so that of two
    movers (an admin's cancel and the round close, say) exactly one wins; the
    other gets FilmChanged and writes nothing. What the other domains do when
    a film moves (its stake counters when it opens) is
    crowdfund/workflows/reactions.py's: call that one from above films."""
    values: dict[str, object] = {}
    if target == FilmState.IN_REVIEW:
        values.update(submitted_at=now, review_note=None)
    elif target == FilmState.DRAFT:
        values["review_note"] = reason
    elif target == FilmState.FUNDING:
        values["opened_at"] = now
    elif target in (FilmState.FUNDED, FilmState.FAILED):
        values["decided_at"] = now
    elif target == FilmState.RELEASED:
        values["released_at"] = now
    session.flush()  # pending edits of the film go first, under the state they were made in
    if not transitions.move(session, FILM, film, target, now=now, actor=actor, reason=reason, values=values):
        raise FilmChanged(film.state)
    session.flush()


def _slugify(title: str) -> str:
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return text[:100] or "film"


def _unique_slug(session: Session, title: str) -> str:
    base = _slugify(title)
    slug, n = base, 1
    while session.scalar(select(Film.id).where(Film.slug == slug)) is not None:
        n += 1
        slug = f"{base}-{n}"
    return slug


def _apply_input(film: Film, data: FilmInput) -> None:
    data = clean_film_text(data)
    for field in fields(FilmInput):
        setattr(film, field.name, getattr(data, field.name))


def _validate(data: FilmInput) -> None:
    problems = film_input_problems(data)
    if problems:
        raise FilmInputError(problems)


def _attach_poster(session: Session, film: Film, poster: bytes | None, max_bytes: int) -> None:
    if poster is None:
        return
    cleaned, content_type = clean_image(poster, max_bytes)  # re-encoded: no EXIF/GPS, nothing appended
    film.poster_id = store_file(session, cleaned, content_type).id


def create_film(
    session: Session,
    user: User,
    data: FilmInput,
    *,
    poster: bytes | None,
    poster_max_bytes: int,
) -> Film:
    if user.studio_id is None:
        raise Forbidden("Only studio members create films.")
    _validate(data)
    film = Film(studio_id=user.studio_id, slug=_unique_slug(session, clean_film_text(data).title))
    _apply_input(film, data)
    _attach_poster(session, film, poster, poster_max_bytes)
    session.add(film)
    session.flush()
    return film


def update_film(
    session: Session,
    film: Film,
    data: FilmInput,
    *,
    poster: bytes | None,
    poster_max_bytes: int,
) -> None:
    if film.state != FilmState.DRAFT:
        raise Conflict("Only drafts can be edited; the terms of a film under review or open are fixed.")
    _validate(data)
    _apply_input(film, data)
    _attach_poster(session, film, poster, poster_max_bytes)
    session.flush()


def _check_ready(film: Film, now: datetime) -> None:
    if film.poster_id is None:
        raise DomainError("Add a poster before submitting the film for review.")
    problem = deadline_problem(film.deadline, now)
    if problem:
        raise DomainError(problem + " Edit the draft and choose a new deadline.")


def submit_for_review(session: Session, film: Film, user: User, *, now: datetime) -> None:
    if film.state != FilmState.DRAFT:
        raise Conflict("This film is not a draft.")
    _check_ready(film, now)
    change_film_state(session, film, FilmState.IN_REVIEW, now=now, actor=user)


def approve(session: Session, film: Film, admin: User, *, now: datetime) -> None:
    """Open the film for funding; from here its terms never change. Its stake
    counters come with it: call workflows.reactions.approve_film."""
    if film.state != FilmState.IN_REVIEW:
        raise Conflict("Only films in review can be approved.")
    if admin.studio_id is not None and admin.studio_id == film.studio_id:
        # Separation of duty: nobody opens their own studio's film for funding.
        raise Forbidden(
            "You are a member of this film's studio, so you cannot approve it: another admin must."
        )
    _check_ready(film, now)
    change_film_state(session, film, FilmState.FUNDING, now=now, actor=admin)
    queue_review_emails(session, film, approved=True)


def _reason_text(reason: str | None) -> str:
    try:
        return multi_line(reason, "The reason")
    except TextProblem as exc:
        raise DomainError(exc.message, field="reason") from exc


def send_back(session: Session, film: Film, admin: User, reason: str, *, now: datetime) -> None:
    reason = _reason_text(reason)
    if not reason:
        raise DomainError("Say why the film goes back to the studio.", field="reason")
    if film.state != FilmState.IN_REVIEW:
        raise Conflict("Only films in review can be sent back.")
    change_film_state(session, film, FilmState.DRAFT, now=now, actor=admin, reason=reason[:5000])
    queue_review_emails(session, film, approved=False, note=reason[:5000])


def withdraw(session: Session, film: Film, user: User, *, now: datetime) -> None:
    """The studio cancels a film that has not opened for funding yet."""
    if film.state not in (FilmState.DRAFT, FilmState.IN_REVIEW):
        raise Conflict("Only drafts and films in review can be withdrawn.")
    change_film_state(session, film, FilmState.CANCELLED, now=now, actor=user, reason="withdrawn")


def cancel_film(session: Session, film: Film, admin: User, reason: str, *, now: datetime) -> None:
    """An admin stops a film; if it was selling, every backer is refunded by the
    next `flask funding close-rounds` (a long job never runs in a request)."""
    reason = _reason_text(reason)
    if not reason:
        raise DomainError("Say why the film is cancelled.", field="reason")
    if film.state not in (FilmState.DRAFT, FilmState.IN_REVIEW, FilmState.FUNDING):
        raise Conflict("Only films not yet funded can be cancelled.")
    change_film_state(session, film, FilmState.CANCELLED, now=now, actor=admin, reason=reason[:5000])


def all_films(session: Session) -> list[Film]:
    return list(session.scalars(select(Film).order_by(Film.created_at.desc()).limit(500)))


def mark_released(session: Session, film: Film, user: User, *, now: datetime) -> None:
    if film.state != FilmState.FUNDED:
        raise Conflict("Only funded films can be marked released.")
    change_film_state(session, film, FilmState.RELEASED, now=now, actor=user)


def close_film(session: Session, film: Film, user: User, *, now: datetime) -> None:
    """The studio closes a released film after its final box-office report: it
    accepts no more reports (payouts.box_office.file_report). Reports already
    filed are still decided and paid out."""
    if film.state != FilmState.RELEASED:
        raise Conflict("Only released films can be closed.")
    change_film_state(session, film, FilmState.CLOSED, now=now, actor=user, reason="final report filed")


# --- lookups -------------------------------------------------------------------


def studio_film(session: Session, user: User, film_id: int) -> Film:
    """A film of the user's own studio; another studio's film is not found."""
    film = session.get(Film, film_id)
    if film is None or user.studio_id is None or film.studio_id != user.studio_id:
        raise NotFound("No such film.")
    return film


def studio_films(session: Session, studio_id: int) -> list[Film]:
    return list(
        session.scalars(select(Film).where(Film.studio_id == studio_id).order_by(Film.created_at.desc()))
    )


def film_by_id(session: Session, film_id: int) -> Film:
    film = session.get(Film, film_id)
    if film is None:
        raise NotFound("No such film.")
    return film


_FILM_BY_SLUG = select(Film).where(Film.slug == bindparam("slug"))
#: What a hold needs of its film (funding.holds.hold_stakes and its view):
#: the flash-sale path reads these, not the synopsis, terms and studio of the
#: page. Built once: composing load_only() per call costs more than it saves.
_FILM_BY_SLUG_FOR_HOLD = _FILM_BY_SLUG.options(
    load_only(
        Film.id,
        Film.slug,
        Film.studio_id,
        Film.state,
        Film.deadline,
        Film.per_backer_limit,
        Film.stake_price_cents,
    ),
    lazyload(Film.studio),
)


def film_by_slug(session: Session, slug: str, *, for_hold: bool = False) -> Film | None:
    """A film by slug, whoever may see it. `for_hold` loads only what a hold
    needs (any other attribute is read on first use)."""
    return session.scalar(_FILM_BY_SLUG_FOR_HOLD if for_hold else _FILM_BY_SLUG, {"slug": slug})


def shown_to(film: Film, viewer: User | None) -> bool:
    """Whether the film's page is open to `viewer` by the film alone: public
    states for all, others for the film's studio and admins. (Its backers see
    a cancelled film too: funding.queries.visible_film.)"""
    if film.state in PUBLIC_STATES:
        return True
    return viewer is not None and (viewer.has_role("admin") or viewer.studio_id == film.studio_id)


def films_with_poster(session: Session, file_id: int) -> list[Film]:
    return list(session.scalars(select(Film).where(Film.poster_id == file_id)).all())


def cancellation(session: Session, film: Film) -> FilmEvent | None:
    """The state change that cancelled the film: when, by whom and why."""
    if film.state != FilmState.CANCELLED:
        return None
    return session.scalar(
        select(FilmEvent)
        .where(FilmEvent.film_id == film.id, FilmEvent.to_state == FilmState.CANCELLED)
        .order_by(FilmEvent.id.desc())
        .limit(1)
    )


def films_in_review(session: Session) -> list[Film]:
    return list(
        session.scalars(select(Film).where(Film.state == FilmState.IN_REVIEW).order_by(Film.submitted_at))
    )


@dataclass
class Page:
    items: list[Film]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, ceil(self.total / self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def catalogue_page(session: Session, states: tuple[FilmState, ...], page: int, per_page: int = 12) -> Page:
    condition = Film.state.in_([s.value for s in states])
    total = session.scalar(select(func.count()).select_from(Film).where(condition)) or 0
    order = Film.deadline.asc() if states == (FilmState.FUNDING,) else Film.decided_at.desc()
    items = list(
        session.scalars(
            select(Film)
            .where(condition)
            .order_by(order, Film.id)
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
    )
    return Page(items=items, page=page, per_page=per_page, total=total)

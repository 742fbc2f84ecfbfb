"""The request's unit of work: one transaction per request, committed once at its boundary.

Services only flush. Views never commit and never roll back: `install(app)`
wraps every endpoint of the app (create_app calls it once every view is
registered), and the wrapper decides how the request's transaction ends:

- the view returns: the request's session commits, once. The response is
  complete by then (templates are rendered inside the view); a streamed one
  has not started (`finish()`, which stream_query calls, committed already).
- the view raises: the session rolls back, in `_discard`, the one place where
  what a request wrote is thrown away; nothing a failed request flushed is
  ever committed. Then
  - an error raised inside an `on_error(...)` block gets that block's answer
    (by default its message flashed and a 303 to `redirect_to`): the view
    names the answer, the wrapper gives it after rolling back, so the answer
    reads what the database holds, never what the failed call left behind;
  - anything else goes on to the app's error handlers (a DomainError: its
    message and its 4xx status; an HTTPException; else the 500 page).

An answer given after a rollback only reads: its transaction is never
committed (it ends when the request's session closes, at teardown).
Workflows that own their steps around calls to Stripe (crowdfund/payments)
commit those steps themselves; what is left after them is the request's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial, wraps
from typing import Any, TypeVar

from flask import Flask, flash, g, redirect

from crowdfund.errors import DomainError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Set on every view the unit of work runs (tests/http/test_unit_of_work.py walks them).
MARK = "in_unit_of_work"


class Answered(Exception):
    """Raised by an `on_error` block: the unit of work rolls back, then gives `answer()`."""

    def __init__(self, error: Exception, answer: Callable[[], Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.answer = answer


def install(app: Flask) -> None:
    """Run every endpoint of `app` in the request's unit of work. Call it last,
    after every blueprint and init_limiter: it wraps the views as they are then."""
    for endpoint, view in list(app.view_functions.items()):
        if not getattr(view, MARK, False):
            app.view_functions[endpoint] = unit_of_work(view)


def unit_of_work(view: F) -> F:
    """`view` inside the request's transaction: committed when it returns, rolled back when it raises."""

    @wraps(view)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            response = view(*args, **kwargs)
            _commit()
        except Answered as answered:
            _discard(reread=True)
            return answered.answer()
        except BaseException:
            _discard(reread=False)
            raise
        return response

    setattr(run, MARK, True)
    return run  # type: ignore[return-value]


@contextmanager
def on_error(
    *errors: type[Exception],
    redirect_to: str | None = None,
    anchor: str | None = None,
    respond: Callable[[Any], Any] | None = None,
    passing: tuple[type[Exception], ...] = (),
) -> Iterator[None]:
    """An error of `errors` (DomainError if none is named) raised in the block
    is answered, after the unit of work has rolled the request back: by
    `respond(error)`, or by flashing the error's message and a 303 to
    `redirect_to` (+ "#anchor"). Errors of `passing` go on to the app's error
    handlers (a FilmChanged: the 409 page), after the same rollback."""
    if (redirect_to is None) == (respond is None):
        raise TypeError("on_error needs redirect_to or respond, not both")
    caught = errors or (DomainError,)
    try:
        yield
    except passing:
        raise
    except caught as error:
        if respond is not None:
            answer = respond
        else:
            assert redirect_to is not None
            answer = _flash_and_redirect(redirect_to + (f"#{anchor}" if anchor else ""))
        raise Answered(error, partial(answer, error)) from error


def _flash_and_redirect(location: str) -> Callable[[Exception], Any]:
    def answer(error: Exception) -> Any:
        flash(getattr(error, "message", None) or str(error), "error")
        return redirect(location, 303)

    return answer


def finish() -> None:
    """End the request's unit of work early: commit what it wrote and release
    its connection. For a streamed response, which reads through a session of
    its own and can outlive the request (site/web.py stream_query)."""
    session = g.get("db_session")
    if session is not None:
        _commit()
        session.close()


def abandon() -> None:
    """For the app's error pages (a failure outside a view too: a before_request
    step, the database gone): what the request wrote is thrown away (`_discard`)
    and the page begins with no session of the request's."""
    _discard(reread=False)
    g.pop("db_session", None)


def _commit() -> None:
    session = g.get("db_session")
    if session is not None and session.in_transaction():
        session.commit()


def _discard(*, reread: bool) -> None:
    """Roll back what the request wrote: the one place a request's writes are thrown away.

    `reread`: an answer follows, which must see the database, not what the
    failed call left in memory: everything loaded is expired (read again on
    use). Otherwise an error page follows: the session is closed, which rolls
    back as well but keeps what was loaded readable (the logged-in user in the
    page's navigation) without asking the database again; a later use of
    db() begins a new transaction."""
    session = g.get("db_session")
    if session is None:
        return
    try:
        if reread:
            session.rollback()
        else:
            session.close()
    except Exception:  # the connection may be gone already: the next use gets a new session
        log.warning("could not roll back the request's session", exc_info=True)
        g.pop("db_session", None)
        try:
            session.close()
        except Exception:
            log.warning("could not close the request's session", exc_info=True)

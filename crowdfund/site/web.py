"""Glue between Flask and the domain: the request's session, the clock, access checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from flask import Flask, abort, current_app, g, request
from flask_login import current_user
from sqlalchemy.orm import Session

from crowdfund.app_services import AppServices
from crowdfund.site import unit_of_work
from crowdfund.site.extensions import login_manager

if TYPE_CHECKING:  # the views hand the adapter to the workflows; they never call it themselves
    from crowdfund.payments.gateway import StripeGateway

F = TypeVar("F", bound=Callable[..., Any])

#: The key of the app's AppServices in `app.extensions` (set by create_app).
SERVICES_EXTENSION = "crowdfund"


def app_services(app: Flask | None = None) -> AppServices:
    """The services of `app` (default: the current app): the web layer's one way to them."""
    services: AppServices | None = (app or current_app).extensions.get(SERVICES_EXTENSION)
    if services is None:
        raise RuntimeError(
            "This Flask app has no crowdfund services: make it with crowdfund.app.create_app()."
        )
    return services


def db() -> Session:
    """The request's session; its unit of work (site/unit_of_work.py) commits it, teardown closes it."""
    if "db_session" not in g:
        g.db_session = app_services().sessions()
    return g.db_session


def stream_query(query: Callable[..., Iterator[Any]], *args: Any) -> Iterator[Any]:
    """Rows for a streamed response, read through a session of their own that
    closes when the stream ends or the client goes away. The request's unit of
    work ends at once (committed, its session closed): a stream can outlive the request."""
    unit_of_work.finish()
    services = app_services()
    sessionmaker = services.sessions
    read_only = services.engine.execution_options(sqlite_begin="DEFERRED")

    def rows() -> Iterator[Any]:
        with sessionmaker(bind=read_only) as session:
            yield from query(session, *args)

    return rows()


def now() -> datetime:
    """The current time in UTC; tests replace the clock to move time."""
    return app_services().clock()


def gateway() -> StripeGateway:
    """The process's StripeGateway, for the views to hand to the workflows (never called here)."""
    return app_services().gateway


def user() -> Any:
    return current_user._get_current_object()


def role_required(*roles: str) -> Callable[[F], F]:
    """Anonymous users are sent to log in; users without any of `roles` get 403."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if roles and not current_user.has_role(*roles):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_roles = roles  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorator


def login_required(view: F) -> F:
    return role_required()(view)


#: What a browser's URL parser drops before it reads a URL (WHATWG URL standard):
#: tab, CR and LF anywhere, and C0 controls and spaces at either end.
_URL_DROPPED = str.maketrans("", "", "\t\r\n")
_URL_TRIMMED = "".join(chr(c) for c in range(0x21))


def safe_next(target: str | None) -> str | None:
    """The same-site path to go to after log-in (or sign-up, or e-mail
    verification), or None when `target` could lead anywhere else.

    The check reads `target` as a browser would: "/\t/evil.example" is
    "//evil.example" to a browser, which is another site. So tab, CR and LF are
    dropped and the ends trimmed first, then anything with a scheme, a host, a
    backslash (a browser reads it as "/") or a control character is refused,
    and what is left is what the redirect uses.
    """
    if not target or len(target) > 2000:
        return None
    cleaned = target.translate(_URL_DROPPED).strip(_URL_TRIMMED)
    if not cleaned.startswith("/") or cleaned.startswith("//") or "\\" in cleaned:
        return None
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c.isspace() for c in cleaned):
        return None
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc:
        return None
    # Non-ASCII characters percent-encoded (UTF-8); existing %-escapes kept as they are.
    return quote(cleaned, safe="/?#[]@!$&'()*+,;=:%-._~")


def wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"

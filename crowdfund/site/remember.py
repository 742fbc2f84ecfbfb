"""Flask glue for "keep me logged in" (the tokens themselves: accounts.logins).

flask-login reads its remember cookie (REMEMBER_COOKIE_NAME, HMAC-signed with
the secret key) and hands its content to the user loader. Our cookie holds
REMEMBER_PREFIX + a random token, never the session's "<id>.<version>", so the
loader can tell the two apart: a session id is checked against the user row
(the hot path, one query), a remember token against the remember_tokens table
(once per browser session), and a valid one becomes a fresh session with a new
token in the cookie. flask-login never sets the cookie itself (login_user is
never called with remember=True).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import after_this_request, current_app, request, session
from flask_login import current_user, login_user
from flask_login.utils import encode_cookie

from crowdfund import db as dbmod
from crowdfund.accounts import logins, users
from crowdfund.accounts.models import User
from crowdfund.site.web import db, now

REMEMBER_PREFIX = "remember:"


def remember_browser(account: User) -> None:
    """After log-in with "keep me logged in": a new token, in a cookie on this response."""
    raw, expires_at = logins.issue_remember_token(
        db(), account, now=now(), lifetime=current_app.config["REMEMBER_COOKIE_DURATION"]
    )
    _set_cookie_on_response(raw, expires_at)


def load_remembered(cookie_value: str) -> User | None:
    """The user flask-login's remember cookie logs in, with the token rotated; None if it is not valid."""
    raw = cookie_value.removeprefix(REMEMBER_PREFIX)[:100]
    # The rotation is a write, even on a GET: part of the request's unit of work,
    # committed with it (and the new cookie set only then: a request that fails
    # keeps the old token, still valid, in the browser). It begins IMMEDIATE on
    # SQLite: see resolve_remembered_user.
    login = logins.use_remember_token(db(), raw, now=now())
    account = users.load_user(db(), login.user_token) if login is not None else None
    if login is None or account is None:
        # flask-login put the cookie's content in the session: take it out, and the cookie with it.
        session.pop("_user_id", None)
        session["_remember"] = "clear"
        return None
    login_user(account, fresh=False)
    if login.new_token is not None:
        _set_cookie_on_response(login.new_token, login.expires_at)
    return account


def resolve_remembered_user() -> None:
    """before_request: with a remember-me cookie, find out who is logged in now,
    before any view begins its work (a remember login writes).

    Without a session cookie the remember token is used, and rotated: the
    request's transaction then begins IMMEDIATE on SQLite (the rotation is its
    first write; a read snapshot that another writer made stale could not be
    upgraded to write). Reading the user of a session cookie stays DEFERRED."""
    if current_app.config["REMEMBER_COOKIE_NAME"] in request.cookies:
        remembered = "_user_id" not in session and session.get("_remember") != "clear"
        with dbmod.sqlite_begin("IMMEDIATE" if remembered else dbmod.sqlite_begin_mode.get()):
            current_user._get_current_object()


def _set_cookie_on_response(raw: str, expires_at: datetime) -> None:
    """The token goes into the cookie once the request's unit of work has
    committed it: a rolled-back token never reaches the browser."""
    config = current_app.config
    value = encode_cookie(REMEMBER_PREFIX + raw)

    def _set(response: Any) -> Any:
        response.set_cookie(
            config["REMEMBER_COOKIE_NAME"],
            value=value,
            expires=expires_at,
            domain=config.get("REMEMBER_COOKIE_DOMAIN"),
            path=config.get("REMEMBER_COOKIE_PATH", "/"),
            secure=config["REMEMBER_COOKIE_SECURE"],
            httponly=config["REMEMBER_COOKIE_HTTPONLY"],
            samesite=config["REMEMBER_COOKIE_SAMESITE"],
        )
        return response

    def _once_committed() -> None:
        after_this_request(_set)

    dbmod.after_commit(db(), _once_committed)

"""Reelshare: fans co-invest in films. `create_app()` builds the Flask app."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import Flask, abort, g, jsonify, render_template, request
from flask import session as cookie_session
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from config import BASE_DIR, config_for, development_secrets
from crowdfund import db as dbmod
from crowdfund.accounts.users import load_user
from crowdfund.app_services import AppServices, build_services
from crowdfund.cli import register_cli
from crowdfund.errors import DomainError
from crowdfund.films.rules import percent_funded, time_left_text
from crowdfund.films.states import STATE_LABELS, FilmState
from crowdfund.money import format_bps, format_cents, format_multiple
from crowdfund.site import unit_of_work
from crowdfund.site.accounts import bp as accounts_bp
from crowdfund.site.actions import actions_bp
from crowdfund.site.admin import admin_bp
from crowdfund.site.catalogue import catalogue_bp
from crowdfund.site.extensions import csrf, init_limiter, login_manager, retry_after_seconds
from crowdfund.site.finance import finance_bp
from crowdfund.site.funding import funding_bp
from crowdfund.site.jobs_admin import jobs_admin_bp
from crowdfund.site.mail_admin import mail_admin_bp
from crowdfund.site.payout_details import payout_details_bp
from crowdfund.site.payouts import payouts_bp
from crowdfund.site.remember import REMEMBER_PREFIX, load_remembered, resolve_remembered_user
from crowdfund.site.review import review_bp
from crowdfund.site.rewards import rewards_bp
from crowdfund.site.studio import studio_bp
from crowdfund.site.web import SERVICES_EXTENSION, db, now, wants_json
from crowdfund.site.webhooks import payments_bp

log = logging.getLogger(__name__)


def create_app(config_name: str | None = None, overrides: dict[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        template_folder=str(BASE_DIR / "templates"),
        static_folder=str(BASE_DIR / "static"),
    )
    app.config.from_mapping(config_for(config_name))
    if overrides:
        app.config.update(overrides)
    if app.config["ENV_NAME"] == "development":
        development_secrets(app.config)
    if not app.config["SECRET_KEY"]:
        raise RuntimeError(
            "SECRET_KEY is not set. Production refuses to start without it: "
            "set SECRET_KEY in the environment (see README, Configuration)."
        )

    services = build_services(app.config)
    install_services(app, services)
    if services.mail_delivery.background:
        # Each worker sweeps even if it never queues mail itself (rows left by a worker that died).
        app.before_request(services.mail_delivery.start)

    if app.config["PROXY_FIX_X_FOR"]:
        # Behind N proxies: the client address (per-address rate limits) and scheme come from them.
        hops = int(app.config["PROXY_FIX_X_FOR"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    login_manager.init_app(app)
    csrf.init_app(app)
    _register_session_lifecycle(app)
    _register_blueprints(app)
    init_limiter(app)  # after the blueprints: it wraps the views marked @rate_limit
    unit_of_work.install(app)  # last around every view: the request commits once (site/unit_of_work.py)
    _register_errors(app)
    _register_template_helpers(app)
    _register_security_headers(app)

    register_cli(app)
    return app


def install_services(app: Flask, services: AppServices) -> None:
    """Make `services` the app's (read by crowdfund.site.web.app_services()) and
    its sessions' (read by crowdfund.session_services.services_of())."""
    app.extensions[SERVICES_EXTENSION] = services
    services.bind_sessions()


def _register_session_lifecycle(app: Flask) -> None:
    @login_manager.user_loader
    def _load_user(user_token: str) -> Any:
        if user_token.startswith(REMEMBER_PREFIX):  # from the remember-me cookie, not the session
            return load_remembered(user_token)
        return load_user(db(), user_token)

    @app.before_request
    def _refuse_nul() -> None:
        # No person types a NUL character, and PostgreSQL cannot store one in text.
        for values in (request.args, request.form):
            for value in values.values():
                if "\x00" in value:
                    abort(400)

    @app.before_request
    def _begin_mode() -> None:
        # SQLite: read-only requests begin DEFERRED so they never queue behind writers.
        mode = "DEFERRED" if request.method in ("GET", "HEAD", "OPTIONS") else "IMMEDIATE"
        g.sqlite_begin_token = dbmod.sqlite_begin_mode.set(mode)

    # After _begin_mode: a remember-me login writes in the request's session (site/remember.py).
    app.before_request(resolve_remembered_user)

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()
        token = g.pop("sqlite_begin_token", None)
        if token is not None:
            dbmod.sqlite_begin_mode.reset(token)


def _register_blueprints(app: Flask) -> None:
    for blueprint in (
        accounts_bp,
        admin_bp,
        catalogue_bp,
        studio_bp,
        review_bp,
        finance_bp,
        funding_bp,
        payments_bp,
        rewards_bp,
        payouts_bp,
        mail_admin_bp,
        jobs_admin_bp,
        payout_details_bp,
        actions_bp,
    ):
        app.register_blueprint(blueprint)


def _register_errors(app: Flask) -> None:
    def render_error(status: int, title: str, message: str) -> tuple[str, int]:
        return render_template("errors/error.html", status=status, title=title, message=message), status

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Any:
        titles = {403: "Not allowed", 404: "Not found", 409: "Not possible now"}
        return render_error(exc.status_code, titles.get(exc.status_code, "Cannot do that"), exc.message)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError) -> Any:
        return render_error(
            400,
            "Form expired",
            "The form expired or came from elsewhere. Go back, reload the page and try again.",
        )

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError) -> Any:
        log.exception("database unavailable")
        unit_of_work.abandon()
        # A page that needs nothing from the database (not even who is logged in).
        body = render_template("errors/unavailable.html")
        return body, 503, {"Retry-After": "30"}

    @app.errorhandler(429)
    def _too_many(exc: HTTPException) -> Any:
        message = "Too many attempts. Please wait a little and try again."
        headers = {"Retry-After": str(retry_after_seconds())}
        if request.mimetype == "application/json" or wants_json():
            response = jsonify(ok=False, result="rate_limited", error="too many requests", message=message)
            response.status_code = 429
            response.headers.update(headers)
            return response
        body, status = render_error(429, "Too many requests", message)
        return body, status, headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        messages = {
            400: "The request could not be understood.",
            403: "You do not have access to this page.",
            404: "We could not find that page.",
            405: "That action is not allowed here.",
            413: "The upload is too large.",
            429: "Too many requests. Please wait a moment and try again.",
        }
        response = exc.get_response()
        body, status = render_error(
            exc.code or 500, exc.name, messages.get(exc.code or 500, exc.description or "")
        )
        response.set_data(body)
        response.content_type = "text/html; charset=utf-8"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        unit_of_work.abandon()
        return render_error(
            500,
            "Something went wrong",
            "An unexpected error occurred. Nothing was charged twice; please try again.",
        )


def _local_time(value: datetime | None, zone: str | None = None, fmt: str = "%d %b %Y, %H:%M %Z") -> str:
    if value is None:
        return ""
    try:
        tz = ZoneInfo(zone or "UTC")
    except (KeyError, ValueError):
        tz = ZoneInfo("UTC")
    return value.astimezone(tz).strftime(fmt)


def _register_template_helpers(app: Flask) -> None:
    app.jinja_env.filters["cents"] = format_cents
    app.jinja_env.filters["bps"] = format_bps
    app.jinja_env.filters["multiple"] = format_multiple
    app.jinja_env.filters["localtime"] = _local_time
    app.jinja_env.filters["isotime"] = lambda v: v.isoformat() if v else ""
    app.jinja_env.filters["state_label"] = lambda s: STATE_LABELS.get(FilmState(s), s)
    app.jinja_env.filters["time_left"] = lambda deadline: time_left_text(deadline, now())
    app.jinja_env.globals["percent_funded"] = percent_funded

    @app.context_processor
    def _helpers() -> dict[str, Any]:
        return {"now": now, "stripe_js_url": app.config["STRIPE_JS_URL"]}


def content_security_policy(config: Any) -> str:
    """Only our own scripts and Stripe.js; no inline script or style anywhere.

    Styles: templates carry no `style=` attribute and no <style> block (the
    statement PDF's <style> is rendered by WeasyPrint, never served as HTML), so
    style-src is 'self' without 'unsafe-inline': an injected style attribute
    cannot restyle a page into a phishing form. Scripts that set element.style
    (Stripe.js, localstripe's fake one) use the CSSOM, which CSP allows.
    Stripe.js calls its API from the browser: in production api.stripe.com
    (STRIPE_API_BASE), with localstripe the same 127.0.0.1:<port> that serves
    the script, hence both origins in connect-src.
    """
    stripe_js = _origin(config["STRIPE_JS_URL"])
    stripe_api = _origin(config["STRIPE_API_BASE"])
    frames = " ".join(o for o in (stripe_js, config["CSP_STRIPE_FRAME_SRC"]) if o)
    directives = [
        "default-src 'self'",
        f"script-src 'self' {stripe_js}".strip(),
        f"connect-src 'self' {' '.join(sorted({stripe_js, stripe_api} - {''}))}".strip(),
        f"frame-src {frames}" if frames else "frame-src 'none'",
        "img-src 'self' data:",  # QR codes are SVG data: URIs
        "style-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def _origin(url: str) -> str:
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _register_security_headers(app: Flask) -> None:
    hsts_seconds = int(app.config["HSTS_SECONDS"])
    security_headers = [
        ("Content-Security-Policy", content_security_policy(app.config)),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
        ("X-Frame-Options", "DENY"),
    ]
    if hsts_seconds:
        security_headers.append(("Strict-Transport-Security", f"max-age={hsts_seconds}; includeSubDomains"))

    @app.after_request
    def _headers(response: Any) -> Any:
        headers = response.headers
        # A view may set a stricter policy of its own (uploaded files: sandbox).
        # One pass over the headers, not one per header: every response runs this.
        present = {name.lower() for name in headers.keys()}
        headers.extend([(name, value) for name, value in security_headers if name.lower() not in present])
        if request.endpoint != "static":
            if _for_a_logged_in_user():
                # Pages and files of a logged-in person (tickets, statements, exports,
                # draft posters) are never kept by a browser or a proxy.
                headers["Cache-Control"] = "no-store"
                headers.pop("Expires", None)
            else:
                # Public pages may be cached, but never served to someone who has a session.
                headers.add("Vary", "Cookie")
        return response


def _for_a_logged_in_user() -> bool:
    """Whether this response goes to an authenticated user, without loading one
    the request did not (a session that names a user counts, loaded or not)."""
    loaded = g.get("_login_user")
    if loaded is not None and getattr(loaded, "is_authenticated", False):
        return True
    return "_user_id" in cookie_session

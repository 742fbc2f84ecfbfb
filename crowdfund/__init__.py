"""Reelshare: fans co-invest in films. `create_app()` builds the Flask app."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, g, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from config import BASE_DIR, config_for
from crowdfund import db as dbmod
from crowdfund import mail
from crowdfund.accounts import passwords
from crowdfund.errors import DomainError
from crowdfund.extensions import csrf, login_manager
from crowdfund.payments.gateway import StripeGateway
from crowdfund.money import format_bps, format_cents, format_multiple

log = logging.getLogger(__name__)


def create_app(config_name: str | None = None, overrides: dict[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        template_folder=str(BASE_DIR / "templates"),
        static_folder=str(BASE_DIR / "static"),
    )
    app.config.from_object(config_for(config_name))
    if overrides:
        app.config.update(overrides)
    if not app.config.get("SECRET_KEY"):
        raise RuntimeError(
            "SECRET_KEY is not set. Production refuses to start without it: "
            "set SECRET_KEY in the environment (see README, Configuration)."
        )

    engine = dbmod.make_engine(app.config["DATABASE_URL"], pool_size=app.config["DATABASE_POOL_SIZE"])
    app.extensions["crowdfund.engine"] = engine
    app.extensions["crowdfund.sessionmaker"] = dbmod.make_sessionmaker(engine, info={
        "mailer": mail.mailer_from_config(app.config),
        "password_hasher": passwords.make_hasher(app.config["PASSWORD_TIME_COST"],
                                                 app.config["PASSWORD_MEMORY_COST_KIB"]),
    })
    app.extensions["crowdfund.clock"] = dbmod.utcnow
    app.extensions["crowdfund.gateway"] = StripeGateway(
        app.config["STRIPE_SECRET_KEY"],
        app.config["STRIPE_API_BASE"],
        app.config["STRIPE_WEBHOOK_SECRET"],
        timeout_seconds=app.config["STRIPE_TIMEOUT_SECONDS"],
    )

    login_manager.init_app(app)
    csrf.init_app(app)
    _register_session_lifecycle(app)
    _register_blueprints(app)
    _register_errors(app)
    _register_template_helpers(app)
    _register_security_headers(app)

    from crowdfund.cli import register_cli

    register_cli(app)
    return app


def _register_session_lifecycle(app: Flask) -> None:
    from crowdfund.accounts.services import load_user
    from crowdfund.web import db

    @login_manager.user_loader
    def _load_user(user_token: str) -> Any:
        return load_user(db(), user_token)

    @app.before_request
    def _begin_mode() -> None:
        # SQLite: read-only requests begin DEFERRED so they never queue behind writers.
        mode = "DEFERRED" if request.method in ("GET", "HEAD", "OPTIONS") else "IMMEDIATE"
        g.sqlite_begin_token = dbmod.sqlite_begin_mode.set(mode)

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()
        token = g.pop("sqlite_begin_token", None)
        if token is not None:
            dbmod.sqlite_begin_mode.reset(token)


def _register_blueprints(app: Flask) -> None:
    from crowdfund.accounts.views import admin_bp, bp as accounts_bp
    from crowdfund.films.views import catalogue_bp, review_bp, studio_bp
    from crowdfund.funding.views import funding_bp
    from crowdfund.payments.views import payments_bp
    from crowdfund.payouts.views import payouts_bp
    from crowdfund.reports.views import finance_bp
    from crowdfund.rewards.views import rewards_bp

    for blueprint in (accounts_bp, admin_bp, catalogue_bp, studio_bp, review_bp, finance_bp, funding_bp,
                      payments_bp, rewards_bp, payouts_bp):
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
            400, "Form expired", "The form expired or came from elsewhere. Go back, reload the page and try again."
        )

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError) -> Any:
        log.exception("database unavailable")
        return render_error(503, "Temporarily unavailable", "We cannot reach our database right now. Nothing was changed; please try again in a minute.")

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
        body, status = render_error(exc.code or 500, exc.name, messages.get(exc.code or 500, exc.description or ""))
        response.set_data(body)
        response.content_type = "text/html; charset=utf-8"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return render_error(500, "Something went wrong", "An unexpected error occurred. Nothing was charged twice; please try again.")


def _local_time(value: datetime | None, zone: str | None = None, fmt: str = "%d %b %Y, %H:%M %Z") -> str:
    if value is None:
        return ""
    try:
        tz = ZoneInfo(zone or "UTC")
    except (KeyError, ValueError):
        tz = ZoneInfo("UTC")
    return value.astimezone(tz).strftime(fmt)


def _register_template_helpers(app: Flask) -> None:
    from crowdfund.films.rules import percent_funded, time_left_text
    from crowdfund.films.states import STATE_LABELS, FilmState
    from crowdfund.web import now

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


def _register_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response: Any) -> Any:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        return response

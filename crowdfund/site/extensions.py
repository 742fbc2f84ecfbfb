"""Flask extensions, created unbound and bound in create_app().

Rate limits: Flask-Limiter keeps its storage and settings on the Limiter object
itself, so one module-level Limiter shared by several apps in one process (the
test suite builds many) would make them overwrite each other's storage. Views
therefore only *mark* themselves with `@rate_limit(...)`; `init_limiter(app)`
builds one Limiter per app and applies the marked limits to that app's view
functions.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect

login_manager = LoginManager()
login_manager.login_view = "accounts.login"
login_manager.login_message = "Please log in to see that page."
login_manager.login_message_category = "info"
login_manager.session_protection = "strong"

csrf = CSRFProtect()

F = TypeVar("F", bound=Callable[..., Any])
LIMITER_KEY = "crowdfund.limiter"
log = logging.getLogger(__name__)


def address_key() -> str:
    """The client's address (behind a proxy, set PROXY_FIX_X_FOR so this is the real one)."""
    return "addr:" + (get_remote_address() or "unknown")


def account_key() -> str:
    """The account a form names (the submitted e-mail), hashed so Redis holds no addresses."""
    email = (request.form.get("email") or "").strip().lower()[:254]
    return "acct:" + hashlib.sha256(email.encode("utf-8", "replace")).hexdigest()[:32]


def user_key() -> str:
    """The logged-in user, else the address."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return address_key()


KEY_FUNCS: dict[str, Callable[[], str]] = {"address": address_key, "account": account_key, "user": user_key}


@dataclass(frozen=True)
class RateLimitSpec:
    setting: str  # config key holding the limit, e.g. "RATELIMIT_LOGIN_ADDRESS" = "30 per 15 minutes"
    key: str  # one of KEY_FUNCS
    methods: tuple[str, ...]
    #: Count only responses with these status codes (None: count every request).
    count_statuses: tuple[int, ...] | None


def rate_limit(
    setting: str,
    *,
    key: str = "address",
    methods: tuple[str, ...] = ("POST",),
    count_statuses: tuple[int, ...] | None = None,
) -> Callable[[F], F]:
    """Mark a view as rate limited by the limit in `app.config[setting]`, per `key`."""
    if key not in KEY_FUNCS:
        raise ValueError(f"unknown rate-limit key {key!r}")
    spec = RateLimitSpec(setting, key, methods, count_statuses)

    def mark(view: F) -> F:
        view.rate_limits = (*getattr(view, "rate_limits", ()), spec)  # type: ignore[attr-defined]
        return view

    return mark


def rate_limit_storage(config: Any) -> str:
    """Where the limiter counts: RATELIMIT_STORAGE_URI if set, else REDIS_URL.

    Production refuses to start with neither: in memory, every gunicorn worker
    keeps its own counts, so N workers allow N times each limit (19 log-in
    guesses got through a limit of 10). Memory is used there only when it is
    chosen explicitly (RATELIMIT_STORAGE_URI=memory://, one worker), and then
    logged loudly at every start.
    """
    storage = config["RATELIMIT_STORAGE_URI"] or config["REDIS_URL"]
    enabled = bool(config["RATELIMIT_ENABLED"])
    production = config["ENV_NAME"] == "production"
    if not storage:
        if production and enabled:
            raise RuntimeError(
                "Rate limits need shared storage in production: set REDIS_URL (or RATELIMIT_STORAGE_URI). "
                "Counted in process memory, each worker would allow the whole limit again. To run on memory "
                "anyway (one worker only), set RATELIMIT_STORAGE_URI=memory:// explicitly."
            )
        storage = "memory://"
    if storage.startswith("memory://") and enabled and not config["TESTING"]:
        (log.critical if production else log.warning)(
            "Rate limits are counted in process memory (%s): each worker process counts on its own, so with "
            "N workers every limit is N times higher. Set REDIS_URL for shared counts.",
            storage,
        )
    if production and not enabled:
        log.warning("Rate limits are switched off (RATELIMIT_ENABLED=0).")
    return storage


def init_limiter(app: Flask) -> Limiter:
    """One Limiter per app, counting where rate_limit_storage() says."""
    storage = rate_limit_storage(app.config)
    limiter = Limiter(
        key_func=address_key,
        app=None,
        storage_uri=storage,
        strategy="fixed-window",
        # No X-RateLimit-* on every response: they cost two more storage round
        # trips per limited request (Redis in production; on the launch-day hold
        # under load, worker CPU per hold fell from 2.96 to 2.09 ms without them,
        # 1.42 ms with no limiter: bench/README.md). A 429 still says when to
        # come back (retry_after_seconds, in the 429 handler).
        headers_enabled=False,
        key_prefix=app.config["RATELIMIT_KEY_PREFIX"],
        enabled=bool(app.config["RATELIMIT_ENABLED"]),
        # A Redis outage must not take log-in down: count in memory until it is back.
        in_memory_fallback_enabled=not storage.startswith("memory://"),
    )
    limiter.init_app(app)
    app.extensions[LIMITER_KEY] = limiter
    if not limiter.enabled:
        return limiter  # switched off: no wrapper runs on any request
    for endpoint, view in list(app.view_functions.items()):
        wrapped: Callable[..., Any] = view
        for spec in getattr(view, "rate_limits", ()):
            wrapped = limiter.limit(
                _limit_value(spec.setting),
                key_func=KEY_FUNCS[spec.key],
                methods=list(spec.methods),
                deduct_when=_deduct_when(spec.count_statuses),
                # Each (view, key kind) has its own counters ("<endpoint>:<key kind>").
                scope=spec.key,
            )(wrapped)
        app.view_functions[endpoint] = wrapped
    return limiter


def retry_after_seconds(default: int = 60) -> int:
    """For a 429: seconds until the limit this request broke resets (one
    storage read, on the refused path only)."""
    limiter: Limiter = current_app.extensions[LIMITER_KEY]
    try:
        broken = limiter.current_limit
        if broken is not None:
            return max(1, int(broken.reset_at - time.time()) + 1)
    except Exception:  # storage unreachable: a default is better than no header
        pass
    return default


def _limit_value(setting: str) -> Callable[[], str]:
    # Read at request time, so an app's config can be changed while it runs.
    return lambda: current_app.config[setting]


def _deduct_when(statuses: tuple[int, ...] | None) -> Callable[[Any], bool] | None:
    if statuses is None:
        return None
    return lambda response: response.status_code in statuses

"""Configuration classes, read from the environment when an app is created.

`CROWDFUND_ENV` picks the class: production (the default, so a server started
without thought is a safe one), development or testing. A setting taken from
the environment is declared as `_env...("NAME", default)` and read by
config_for(), so importing this module reads nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

BASE_DIR = Path(__file__).resolve().parent
T = TypeVar("T")


class _Env(Generic[T]):
    """A setting read from the environment variable `name` when the
    configuration is read (config_for(), at create_app), never at import: a
    process that sets or changes a variable before it builds its app is seen."""

    def __init__(self, name: str, default: T, parse: Callable[[str], T]) -> None:
        self.name, self.default, self.parse = name, default, parse

    def __get__(self, instance: object, owner: type | None = None) -> T:
        return self.read(os.environ)

    def read(self, environ: Mapping[str, str]) -> T:
        raw = environ.get(self.name)
        return self.parse(raw) if raw is not None else self.default


def _env(name: str, default: str) -> _Env[str]:
    return _Env(name, default, str)


def _env_optional(name: str) -> _Env[str | None]:
    return _Env[str | None](name, None, str)


def _env_int(name: str, default: int) -> _Env[int]:
    # An empty variable means "the default", as a missing one does.
    return _Env(name, default, lambda raw: int(raw) if raw != "" else default)


def _env_optional_int(name: str) -> _Env[int | None]:
    # Unset or empty: None, for a default decided from other settings.
    return _Env[int | None](name, None, lambda raw: int(raw) if raw != "" else None)


def _env_flag(name: str, default: str) -> _Env[bool]:
    return _Env(name, default not in ("0", "false", "no"), lambda raw: raw not in ("0", "false", "no"))


def _env_list(name: str) -> _Env[list[str]]:
    """Comma-separated; empty parts dropped."""
    return _Env[list[str]](name, [], lambda raw: [part for part in raw.split(",") if part])


class Config:
    ENV_NAME = "base"
    SECRET_KEY = _env_optional("SECRET_KEY")
    #: Old keys, comma-separated, still accepted for session cookies while a new
    #: SECRET_KEY rolls out (Flask 3.1); see docs/operations.md, Key rotation.
    SECRET_KEY_FALLBACKS = _env_list("SECRET_KEY_FALLBACKS")
    DATABASE_URL = _env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'instance' / 'crowdfund.db'}")
    # Connection pool per worker process; a few connections serve many requests.
    DATABASE_POOL_SIZE = _env_int("DATABASE_POOL_SIZE", 5)
    #: A pooled connection idle this long is tested before use (see crowdfund/db.py).
    DATABASE_PING_IDLE_SECONDS = _env_int("DATABASE_PING_IDLE_SECONDS", 10)
    #: A pooled connection older than this is closed and replaced at its next
    #: checkout, so no backend keeps plans and caches from long ago (a backend
    #: that cached its plans while the orders table was empty grew slower with
    #: every order: bench/README.md); a new connection costs a few ms. -1: never.
    DATABASE_POOL_RECYCLE_SECONDS = _env_int("DATABASE_POOL_RECYCLE_SECONDS", 3600)

    # Whole-request body limit; per-file limits are stricter (see uploads.py).
    MAX_CONTENT_LENGTH = _env_int("MAX_CONTENT_LENGTH", 8 * 1024 * 1024)
    POSTER_MAX_BYTES = _env_int("POSTER_MAX_BYTES", 2 * 1024 * 1024)
    REPORT_FILE_MAX_BYTES = _env_int("REPORT_FILE_MAX_BYTES", 5 * 1024 * 1024)

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = True
    #: "Keep me logged in": a random token, rotated at each use, that ends this
    #: long after log-in (accounts/remember.py). A new name: cookies of the old
    #: kind (the session id, valid until a password change) are ignored.
    REMEMBER_COOKIE_NAME = "remember"
    REMEMBER_COOKIE_DURATION = timedelta(days=30)
    PERMANENT_SESSION_LIFETIME = timedelta(days=14)
    WTF_CSRF_TIME_LIMIT = 3600 * 8

    # argon2id cost; the test config lowers it so the suite stays fast.
    PASSWORD_TIME_COST = _env_int("PASSWORD_TIME_COST", 3)
    PASSWORD_MEMORY_COST_KIB = _env_int("PASSWORD_MEMORY_COST_KIB", 65536)

    # Platform fee taken from escrow when a film is funded, in basis points.
    PLATFORM_FEE_BPS = _env_int("PLATFORM_FEE_BPS", 500)
    HOLD_MINUTES = _env_int("HOLD_MINUTES", 15)

    STRIPE_API_BASE = _env("STRIPE_API_BASE", "https://api.stripe.com")
    STRIPE_SECRET_KEY = _env("STRIPE_SECRET_KEY", "")
    STRIPE_PUBLISHABLE_KEY = _env("STRIPE_PUBLISHABLE_KEY", "")
    STRIPE_WEBHOOK_SECRET = _env("STRIPE_WEBHOOK_SECRET", "")
    STRIPE_JS_URL = _env("STRIPE_JS_URL", "https://js.stripe.com/v3/")
    STRIPE_TIMEOUT_SECONDS = _env_int("STRIPE_TIMEOUT_SECONDS", 20)
    #: Retries of a request that timed out or failed to connect (the SDK sends an idempotency key).
    STRIPE_MAX_NETWORK_RETRIES = _env_int("STRIPE_MAX_NETWORK_RETRIES", 2)
    #: Requests per second to Stripe from all workers together (a token bucket in
    #: REDIS_URL; without it, per process). Unset: 100 for an sk_live_ key, else
    #: 25 (Stripe's live and sandbox limits); 0: unlimited. See app_services.stripe_rate.
    STRIPE_MAX_REQUESTS_PER_SECOND = _env_optional_int("STRIPE_MAX_REQUESTS_PER_SECOND")

    # Mail: "smtp" sends through MAIL_SERVER:MAIL_PORT; "folder" writes .eml files
    # to MAIL_FOLDER; "console" prints them.
    MAIL_BACKEND = _env("MAIL_BACKEND", "smtp")
    MAIL_SERVER = _env("MAIL_SERVER", "127.0.0.1")
    MAIL_PORT = _env_int("MAIL_PORT", 25)
    MAIL_FOLDER = _env("MAIL_FOLDER", str(BASE_DIR / "instance" / "mail"))
    MAIL_SENDER = _env("MAIL_SENDER", "Reelshare <no-reply@reelshare.test>")
    #: Mail is sent from the outbox (the `emails` table) after commit by Celery
    #: workers (the `mail.deliver` task). Without a worker, "1" sends it from a
    #: background thread of each process instead (a single-machine fallback).
    MAIL_DELIVERY_THREAD = _env_flag("MAIL_DELIVERY_THREAD", "0")
    #: The thread also sweeps this often for mail it was not woken for.
    MAIL_SWEEP_SECONDS = _env_int("MAIL_SWEEP_SECONDS", 60)
    #: Messages per SMTP connection.
    MAIL_BATCH_SIZE = _env_int("MAIL_BATCH_SIZE", 50)
    #: A message that could not be sent is retried after 1, 2, 4 ... times this,
    #: and marked failed (shown on /admin/mail) after MAIL_MAX_ATTEMPTS attempts.
    MAIL_RETRY_SECONDS = _env_int("MAIL_RETRY_SECONDS", 60)
    MAIL_MAX_ATTEMPTS = _env_int("MAIL_MAX_ATTEMPTS", 5)

    REDIS_URL = _env("REDIS_URL", "")
    #: Celery (crowdfund/worker.py, `celery -A worker worker|beat`): the broker,
    #: default REDIS_URL; production refuses to start a worker with neither.
    #: "memory://" keeps tasks in one process (development only).
    CELERY_BROKER_URL = _env("CELERY_BROKER_URL", "")
    CELERY_QUEUE = _env("CELERY_QUEUE", "crowdfund")
    #: A task a worker took but did not acknowledge in this time goes to another
    #: worker (acknowledged late: only once done). Longer than any job runs.
    CELERY_VISIBILITY_TIMEOUT_SECONDS = _env_int("CELERY_VISIBILITY_TIMEOUT_SECONDS", 3600)
    #: Outbox rows (tasks and e-mails) still waiting this long after they were
    #: due (or handed on) have no worker (a crash between commit and hand-off): the
    #: sweep hands them on, and /admin/jobs counts them as lost.
    OUTBOX_SWEEP_SECONDS = _env_int("OUTBOX_SWEEP_SECONDS", 300)
    #: How often the one scheduler (celery beat with redbeat's lock) starts each periodic job.
    SCHEDULE_CLOSE_ROUNDS_SECONDS = _env_int("SCHEDULE_CLOSE_ROUNDS_SECONDS", 300)
    SCHEDULE_RELEASE_HOLDS_SECONDS = _env_int("SCHEDULE_RELEASE_HOLDS_SECONDS", 900)
    SCHEDULE_RECONCILE_SECONDS = _env_int("SCHEDULE_RECONCILE_SECONDS", 600)
    SCHEDULE_PAYOUTS_SECONDS = _env_int("SCHEDULE_PAYOUTS_SECONDS", 300)
    SCHEDULE_MAIL_SECONDS = _env_int("SCHEDULE_MAIL_SECONDS", 60)
    SCHEDULE_SWEEP_SECONDS = _env_int("SCHEDULE_SWEEP_SECONDS", 60)
    #: A running row's lease: its worker is taken to have died after this long.
    OUTBOX_LEASE_SECONDS = _env_int("OUTBOX_LEASE_SECONDS", 600)
    OUTBOX_MAX_ATTEMPTS = _env_int("OUTBOX_MAX_ATTEMPTS", 5)
    #: The first retry's delay (doubling, at most 30 minutes: under the visibility timeout).
    OUTBOX_BACKOFF_SECONDS = _env_int("OUTBOX_BACKOFF_SECONDS", 30)
    #: Orders per refund batch task.
    REFUND_BATCH_SIZE = _env_int("REFUND_BATCH_SIZE", 500)
    #: Payout statements written per payouts.write task (one transaction each).
    STATEMENT_BATCH_SIZE = _env_int("STATEMENT_BATCH_SIZE", 2000)
    #: A refund claimed by a worker that died is taken over after this long
    #: (longer than one Stripe call can take, retries included).
    REFUND_CLAIM_TIMEOUT_SECONDS = _env_int("REFUND_CLAIM_TIMEOUT_SECONDS", 600)
    #: Rate-limit storage (a Flask-Limiter storage URI); default: REDIS_URL.
    #: Production refuses to start with neither, unless this is set to memory://
    #: explicitly (counts per worker process: only for a single worker).
    RATELIMIT_STORAGE_URI = _env("RATELIMIT_STORAGE_URI", "")
    #: Every link in e-mail starts with this, never with the request's
    #: Host header, which a client chooses.
    PUBLIC_URL = _env("PUBLIC_URL", "http://127.0.0.1:5000")
    #: Number of proxies in front of gunicorn that set X-Forwarded-For/-Proto
    #: (0: none). Per-address rate limits need the real client address.
    PROXY_FIX_X_FOR = _env_int("PROXY_FIX_X_FOR", 0)

    # Rate limits (Flask-Limiter syntax "N per M minutes"), in Redis when
    # REDIS_URL is set, else in process memory (not in production: see
    # RATELIMIT_STORAGE_URI). A limited request gets a 429
    # with a message and Retry-After.
    RATELIMIT_ENABLED = _env_flag("RATELIMIT_ENABLED", "1")
    RATELIMIT_KEY_PREFIX = _env("RATELIMIT_KEY_PREFIX", "crowdfund")
    #: Failed log-ins per account (the submitted e-mail), whatever the address.
    RATELIMIT_LOGIN_ACCOUNT = _env("RATELIMIT_LOGIN_ACCOUNT", "10 per 15 minutes")
    #: Log-in attempts per client address, whatever the account.
    RATELIMIT_LOGIN_ADDRESS = _env("RATELIMIT_LOGIN_ADDRESS", "30 per 15 minutes")
    #: Sign-ups per client address; only sign-ups that went through count (not
    #: forms sent back with errors).
    RATELIMIT_SIGNUP = _env("RATELIMIT_SIGNUP", "10 per hour")
    #: "Forgot password" requests per address and per account; reset-form posts per address.
    RATELIMIT_RESET_ADDRESS = _env("RATELIMIT_RESET_ADDRESS", "10 per hour")
    RATELIMIT_RESET_ACCOUNT = _env("RATELIMIT_RESET_ACCOUNT", "3 per hour")
    #: "Send the confirmation link again" per logged-in user.
    RATELIMIT_VERIFY_EMAIL = _env("RATELIMIT_VERIFY_EMAIL", "5 per hour")
    #: Stake holds per logged-in fan.
    RATELIMIT_HOLD = _env("RATELIMIT_HOLD", "20 per minute")
    #: Loads of the checkout page per logged-in fan (each may ask Stripe for the order's SetupIntent).
    RATELIMIT_CHECKOUT = _env("RATELIMIT_CHECKOUT", "30 per minute")
    #: Ticket check-ins per door-staff account (a busy door scans one every few seconds).
    RATELIMIT_CHECK_IN = _env("RATELIMIT_CHECK_IN", "120 per minute")
    #: Stripe webhook deliveries per sending address.
    RATELIMIT_WEBHOOK = _env("RATELIMIT_WEBHOOK", "600 per minute")

    #: How long an e-mailed password-reset link works.
    PASSWORD_RESET_MAX_AGE_SECONDS = _env_int("PASSWORD_RESET_MAX_AGE_SECONDS", 3600)
    #: How long the e-mail confirmation link sent at sign-up works (a new one can be sent).
    EMAIL_VERIFY_MAX_AGE_SECONDS = _env_int("EMAIL_VERIFY_MAX_AGE_SECONDS", 3 * 24 * 3600)

    #: Fernet keys (comma-separated, newest first) sealing backers' bank details at
    #: rest; production refuses to start without one. Elsewhere, unset, a key is
    #: derived from SECRET_KEY. Rotate: put the new key first, keep the old after it.
    PAYOUT_DETAILS_KEYS = _env("PAYOUT_DETAILS_KEYS", "")
    #: Strict-Transport-Security on every response; production only (below).
    HSTS_SECONDS = 0
    #: Extra frame origins for Stripe.js's 3-D Secure pages (real Stripe only).
    CSP_STRIPE_FRAME_SRC = _env("CSP_STRIPE_FRAME_SRC", "https://hooks.stripe.com")


class ProductionConfig(Config):
    ENV_NAME = "production"
    # Secure cookies come from Config; HSTS only here (two years, subdomains included).
    HSTS_SECONDS = _env_int("HSTS_SECONDS", 63072000)


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    # SECRET_KEY and STRIPE_WEBHOOK_SECRET, unless set in the environment, are
    # made at random for each instance folder (the SQLite database's folder) and
    # kept there: development_secrets() below. A secret written here would let
    # anyone forge an admin's cookie on every development-config deployment.
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_SECURE = False
    MAIL_BACKEND = _env("MAIL_BACKEND", "folder")


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "test-secret"
    DATABASE_URL = _env("TEST_DATABASE_URL", "sqlite://")
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_SECURE = False
    PASSWORD_TIME_COST = 1
    PASSWORD_MEMORY_COST_KIB = 8
    MAIL_BACKEND = "memory"
    # Tests deliver from their own thread (tests/conftest.py, MailCapture), deterministically.
    MAIL_DELIVERY_THREAD = False
    # Limits stay on (so every test runs through the limiter) but far above what
    # any test, concurrency run or browser journey sends; tests/http/test_rate_limits.py
    # builds its own apps with low limits.
    RATELIMIT_ENABLED = True
    REDIS_URL = ""  # memory; the Redis test passes its own REDIS_URL
    # The Stripe bucket stays on (every test's requests go through it) but far
    # above what any test sends; tests/services/test_stripe_rate_limit.py builds low ones.
    STRIPE_MAX_REQUESTS_PER_SECOND = 10000
    RATELIMIT_STORAGE_URI = ""
    RATELIMIT_KEY_PREFIX = "crowdfund-test"
    RATELIMIT_LOGIN_ACCOUNT = RATELIMIT_LOGIN_ADDRESS = RATELIMIT_SIGNUP = "100000 per hour"
    RATELIMIT_RESET_ADDRESS = RATELIMIT_RESET_ACCOUNT = RATELIMIT_HOLD = "100000 per hour"
    RATELIMIT_CHECK_IN = RATELIMIT_WEBHOOK = RATELIMIT_VERIFY_EMAIL = RATELIMIT_CHECKOUT = "100000 per hour"


def instance_folder(database_url: str) -> Path:
    """Where an instance keeps its files: beside its SQLite database, else instance/."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).resolve().parent
    return BASE_DIR / "instance"


def instance_secret(folder: Path, name: str, prefix: str = "") -> str:
    """The secret kept in folder/name (mode 0600), made at random on first use."""
    import secrets

    path = folder / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    value = prefix + secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(value + "\n")
    return value


def development_secrets(settings: dict) -> None:  # type: ignore[type-arg]
    """Fill in the development config's missing secrets from its instance folder."""
    folder = instance_folder(settings["DATABASE_URL"])
    if not settings.get("SECRET_KEY"):
        settings["SECRET_KEY"] = instance_secret(folder, "secret_key")
    if not settings.get("STRIPE_WEBHOOK_SECRET"):
        settings["STRIPE_WEBHOOK_SECRET"] = instance_secret(folder, "stripe_webhook_secret", prefix="whsec_")


CONFIGS = {
    "production": ProductionConfig,
    "development": DevelopmentConfig,
    "testing": TestingConfig,
}


def config_for(name: str | None = None) -> dict[str, Any]:
    """The settings of the config class `name` (default: $CROWDFUND_ENV, else
    production), with the environment as it is now: read here, at app creation,
    never when this module is imported."""
    name = name or os.environ.get("CROWDFUND_ENV", "production")
    try:
        chosen = CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"CROWDFUND_ENV must be one of {sorted(CONFIGS)}, not {name!r}") from None
    return {key: getattr(chosen, key) for key in dir(chosen) if key.isupper()}

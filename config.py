"""Configuration classes, read from the environment.

`CROWDFUND_ENV` picks the class: production (the default, so a server started
without thought is a safe one), development or testing.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


class Config:
    ENV_NAME = "base"
    SECRET_KEY = os.environ.get("SECRET_KEY")
    #: Old keys, comma-separated, still accepted for session cookies while a new
    #: SECRET_KEY rolls out (Flask 3.1); see docs/operations.md, Key rotation.
    SECRET_KEY_FALLBACKS = [k for k in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if k]
    DATABASE_URL = os.environ.get(
        "DATABASE_URL", f"sqlite:///{BASE_DIR / 'instance' / 'crowdfund.db'}"
    )
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
    REMEMBER_COOKIE_DURATION = timedelta(days=14)
    PERMANENT_SESSION_LIFETIME = timedelta(days=14)
    WTF_CSRF_TIME_LIMIT = 3600 * 8

    # argon2id cost; the test config lowers it so the suite stays fast.
    PASSWORD_TIME_COST = _env_int("PASSWORD_TIME_COST", 3)
    PASSWORD_MEMORY_COST_KIB = _env_int("PASSWORD_MEMORY_COST_KIB", 65536)

    # Platform fee taken from escrow when a film is funded, in basis points.
    PLATFORM_FEE_BPS = _env_int("PLATFORM_FEE_BPS", 500)
    HOLD_MINUTES = _env_int("HOLD_MINUTES", 15)

    STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "https://api.stripe.com")
    STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
    STRIPE_PUBLISHABLE_KEY = os.environ.get("STRIPE_PUBLISHABLE_KEY", "")
    STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
    STRIPE_JS_URL = os.environ.get("STRIPE_JS_URL", "https://js.stripe.com/v3/")
    STRIPE_TIMEOUT_SECONDS = _env_int("STRIPE_TIMEOUT_SECONDS", 20)
    #: Retries of a request that timed out or failed to connect (the SDK sends an idempotency key).
    STRIPE_MAX_NETWORK_RETRIES = _env_int("STRIPE_MAX_NETWORK_RETRIES", 2)

    # Mail: "smtp" sends through MAIL_SERVER:MAIL_PORT; "folder" writes .eml files
    # to MAIL_FOLDER; "console" prints them.
    MAIL_BACKEND = os.environ.get("MAIL_BACKEND", "smtp")
    MAIL_SERVER = os.environ.get("MAIL_SERVER", "127.0.0.1")
    MAIL_PORT = _env_int("MAIL_PORT", 25)
    MAIL_FOLDER = os.environ.get("MAIL_FOLDER", str(BASE_DIR / "instance" / "mail"))
    MAIL_SENDER = os.environ.get("MAIL_SENDER", "Reelshare <no-reply@reelshare.test>")

    REDIS_URL = os.environ.get("REDIS_URL", "")
    #: Links in e-mail (password reset) start with this, never with the request's
    #: Host header, which a client chooses.
    PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://127.0.0.1:5000")
    #: Number of proxies in front of gunicorn that set X-Forwarded-For/-Proto
    #: (0: none). Per-address rate limits need the real client address.
    PROXY_FIX_X_FOR = _env_int("PROXY_FIX_X_FOR", 0)

    # Rate limits (Flask-Limiter syntax "N per M minutes"), in Redis when
    # REDIS_URL is set, else in process memory. A limited request gets a 429
    # with a message and Retry-After.
    RATELIMIT_ENABLED = os.environ.get("RATELIMIT_ENABLED", "1") not in ("0", "false", "no")
    RATELIMIT_KEY_PREFIX = os.environ.get("RATELIMIT_KEY_PREFIX", "crowdfund")
    #: Failed log-ins per account (the submitted e-mail), whatever the address.
    RATELIMIT_LOGIN_ACCOUNT = os.environ.get("RATELIMIT_LOGIN_ACCOUNT", "10 per 15 minutes")
    #: Log-in attempts per client address, whatever the account.
    RATELIMIT_LOGIN_ADDRESS = os.environ.get("RATELIMIT_LOGIN_ADDRESS", "30 per 15 minutes")
    RATELIMIT_SIGNUP = os.environ.get("RATELIMIT_SIGNUP", "10 per hour")
    #: "Forgot password" requests per address and per account; reset-form posts per address.
    RATELIMIT_RESET_ADDRESS = os.environ.get("RATELIMIT_RESET_ADDRESS", "10 per hour")
    RATELIMIT_RESET_ACCOUNT = os.environ.get("RATELIMIT_RESET_ACCOUNT", "3 per hour")
    #: Stake holds per logged-in fan.
    RATELIMIT_HOLD = os.environ.get("RATELIMIT_HOLD", "20 per minute")
    #: Loads of the checkout page per logged-in fan (each may ask Stripe for the order's SetupIntent).
    RATELIMIT_CHECKOUT = os.environ.get("RATELIMIT_CHECKOUT", "30 per minute")
    #: Ticket check-ins per door-staff account (a busy door scans one every few seconds).
    RATELIMIT_CHECK_IN = os.environ.get("RATELIMIT_CHECK_IN", "120 per minute")
    #: Stripe webhook deliveries per sending address.
    RATELIMIT_WEBHOOK = os.environ.get("RATELIMIT_WEBHOOK", "600 per minute")

    #: How long an e-mailed password-reset link works.
    PASSWORD_RESET_MAX_AGE_SECONDS = _env_int("PASSWORD_RESET_MAX_AGE_SECONDS", 3600)

    #: Strict-Transport-Security on every response; production only (below).
    HSTS_SECONDS = 0
    #: Extra frame origins for Stripe.js's 3-D Secure pages (real Stripe only).
    CSP_STRIPE_FRAME_SRC = os.environ.get("CSP_STRIPE_FRAME_SRC", "https://hooks.stripe.com")


class ProductionConfig(Config):
    ENV_NAME = "production"
    # Secure cookies come from Config; HSTS only here (two years, subdomains included).
    HSTS_SECONDS = _env_int("HSTS_SECONDS", 63072000)


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    SECRET_KEY = os.environ.get("SECRET_KEY") or "dev-only-not-secret"
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_SECURE = False
    MAIL_BACKEND = os.environ.get("MAIL_BACKEND", "folder")


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "test-secret"
    DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "sqlite://")
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_SECURE = False
    PASSWORD_TIME_COST = 1
    PASSWORD_MEMORY_COST_KIB = 8
    MAIL_BACKEND = "memory"
    # Limits stay on (so every test runs through the limiter) but far above what
    # any test, concurrency run or browser journey sends; tests/http/test_rate_limits.py
    # builds its own apps with low limits.
    RATELIMIT_ENABLED = True
    REDIS_URL = ""  # memory; the Redis test passes its own REDIS_URL
    RATELIMIT_KEY_PREFIX = "crowdfund-test"
    RATELIMIT_LOGIN_ACCOUNT = RATELIMIT_LOGIN_ADDRESS = RATELIMIT_SIGNUP = "100000 per hour"
    RATELIMIT_RESET_ADDRESS = RATELIMIT_RESET_ACCOUNT = RATELIMIT_HOLD = "100000 per hour"
    RATELIMIT_CHECK_IN = RATELIMIT_WEBHOOK = RATELIMIT_CHECKOUT = "100000 per hour"


CONFIGS = {
    "production": ProductionConfig,
    "development": DevelopmentConfig,
    "testing": TestingConfig,
}


def config_for(name: str | None = None) -> type[Config]:
    name = name or os.environ.get("CROWDFUND_ENV", "production")
    try:
        return CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"CROWDFUND_ENV must be one of {sorted(CONFIGS)}, not {name!r}")

"""WSGI apps for bench/launch.py, served by gunicorn on 127.0.0.1. Bench only.

- `real`: the platform itself, `create_app("production")`, with the only
  change plain http needs: cookies not marked Secure (the bench has no TLS).
  Rate limiting is switched off (all buyers log in from 127.0.0.1), or with
  BENCH_REDIS_URL on in Redis with limits no buyer reaches.
- `bare`: the framework limit, a bare Flask + SQLAlchemy app whose POST /hold
  runs only the hold transaction (the app's own statement) and commits, and
  whose GET /hello answers a constant.

Both read DATABASE_URL and DATABASE_POOL_SIZE from the environment.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def real_app(settings: dict | None = None):  # type: ignore[no-untyped-def,type-arg]
    from crowdfund.app import create_app

    limits: dict[str, object] = {"RATELIMIT_ENABLED": False}
    if os.environ.get("BENCH_REDIS_URL"):
        # launch.py --rate-limits: the limiter on, in Redis, as in production,
        # with limits no buyer reaches (all log in from 127.0.0.1), so each
        # hold pays the production check (a Redis round trip) and is never refused.
        limits = {"RATELIMIT_ENABLED": True, "REDIS_URL": os.environ["BENCH_REDIS_URL"],
                  "RATELIMIT_KEY_PREFIX": os.environ.get("BENCH_RATELIMIT_PREFIX", "bench"),
                  "RATELIMIT_LOGIN_ADDRESS": "1000000 per minute", "RATELIMIT_LOGIN_ACCOUNT": "1000000 per minute",
                  "RATELIMIT_HOLD": "1000000 per minute"}
    return create_app("production", overrides={
        "SESSION_COOKIE_SECURE": False,
        "REMEMBER_COOKIE_SECURE": False,
        "MAIL_DELIVERY_THREAD": False,  # holds send no mail; its database is dropped under it at the end
        **limits,
        **(settings or {}),
    })


def bare_app():  # type: ignore[no-untyped-def]
    from flask import Flask, request

    from config import Config
    from crowdfund.db import make_engine
    from crowdfund.funding.hold_statement import _HOLD_STATEMENT_PG

    app = Flask("bare")
    # The app's engine and pool settings (config.py, from the same environment), nothing else of the app.
    engine = make_engine(os.environ["DATABASE_URL"], pool_size=Config.DATABASE_POOL_SIZE,
                         ping_idle_seconds=Config.DATABASE_PING_IDLE_SECONDS,
                         recycle_seconds=Config.DATABASE_POOL_RECYCLE_SECONDS)
    film_id = int(os.environ["BENCH_BARE_FILM_ID"])
    limit = int(os.environ["BENCH_BARE_LIMIT"])

    @app.post("/hold")
    def hold():  # type: ignore[no-untyped-def]
        now = datetime.now(UTC)
        with engine.begin() as conn:
            _prior, _film_open, _clear, _position_ok, _units_ok, order_id = conn.execute(_HOLD_STATEMENT_PG, {
                "film_id": film_id, "user_id": int(request.form["user_id"]), "units": 1,
                "per_backer_limit": limit, "reference": "RS-" + secrets.token_hex(6).upper(),
                "unit_price_cents": 5000, "amount_cents": 5000, "idempotency_key": request.form["key"],
                "created_at": now, "expires_at": now + timedelta(minutes=15),
            }).one()
        if order_id is None:
            return "refused", 409
        return "", 303, {"Location": f"/orders/{order_id}"}

    @app.get("/hello")
    def hello():  # type: ignore[no-untyped-def]
        return "hello"

    return app


if "BENCH_APP" in os.environ:  # served by gunicorn (bench/launch.py sets it)
    app = bare_app() if os.environ["BENCH_APP"] == "bare" else real_app()

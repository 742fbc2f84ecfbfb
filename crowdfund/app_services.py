"""The app's services in one typed object, built once from the configuration.

`build_services(settings)` makes the engine, the sessionmaker, the clock, the
Stripe gateway, the mailer and its outbox delivery, the password hasher and the
hold-terms cache, and returns them as one frozen `AppServices`. Nothing else
makes them, and nothing looks them up by name:

- the web layer reads the object with `crowdfund.site.web.app_services()`
  (create_app keeps it in `app.extensions["crowdfund"]`);
- domain code reads it through its session with
  `crowdfund.session_services.services_of(session)` (every session of
  `AppServices.sessions` carries it in its info);
- jobs, commands, benchmarks and tests hold the object itself.

This module imports no Flask, so a script or a benchmark builds the same
services as the app without one. It sits at the top of the house, beside
app.py: it assembles parts of every layer (core, funding, payments).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from crowdfund import db as dbmod
from crowdfund.accounts import passwords
from crowdfund.funding.hold_terms import HoldTermsCache
from crowdfund.mail.delivery import MailDelivery
from crowdfund.mail.transport import Mailer, mailer_from_config
from crowdfund.outbox.tasks import Handoff
from crowdfund.payments.gateway import StripeGateway
from crowdfund.rate_limit import TokenBucket, make_bucket
from crowdfund.secrets_box import SecretBox, secret_box_from
from crowdfund.session_services import SERVICES_KEY


@dataclass(frozen=True)
class AppServices:
    """Every long-lived service of one app (one per process and config)."""

    engine: Engine
    #: Makes the app's sessions; each carries this object in its info (SERVICES_KEY).
    sessions: sessionmaker[Session]
    #: The current time in UTC; tests install a copy with their own clock (with_clock).
    clock: Callable[[], datetime]
    gateway: StripeGateway
    mailer: Mailer
    #: Sends the outbox's committed rows (a background thread per process, or `flask mail deliver`).
    mail_delivery: MailDelivery
    password_hasher: PasswordHasher
    hold_terms_cache: HoldTermsCache
    #: Seals bank details at rest (crowdfund/secrets_box.py).
    secret_box: SecretBox
    #: Hands committed outbox rows to the task queue (installed by crowdfund/worker.py's make_celery).
    handoff: Handoff
    #: The site's address for links in e-mail (settings["PUBLIC_URL"], no trailing slash).
    public_url: str

    def bind_sessions(self) -> None:
        """Make the sessionmaker's sessions carry this object (not a copy made before)."""
        self.sessions.configure(info={SERVICES_KEY: self})

    def with_clock(self, clock: Callable[[], datetime]) -> AppServices:
        """The same services with another clock (tests move time with it); bind it to use it."""
        return dataclasses.replace(self, clock=clock)

    def close(self) -> None:
        """Release the gateway's HTTP connections and the engine's pool."""
        self.gateway.close()
        self.engine.dispose()


def stripe_rate(settings: Mapping[str, Any]) -> int:
    """STRIPE_MAX_REQUESTS_PER_SECOND, or Stripe's own limit for the key when
    unset: 100/s in live mode, 25/s in the sandbox (and for localstripe)."""
    configured = settings.get("STRIPE_MAX_REQUESTS_PER_SECOND")
    if configured is not None and configured != "":
        return int(configured)
    return 100 if str(settings["STRIPE_SECRET_KEY"]).startswith("sk_live_") else 25


def stripe_bucket(settings: Mapping[str, Any]) -> TokenBucket:
    """The token bucket of every request to Stripe: in Redis (REDIS_URL), so
    all workers on all machines share the rate; without it, per process."""
    rate = stripe_rate(settings)
    # Stripe counts per account and mode: one bucket per secret key (a hash, never the key).
    account = hashlib.sha256(str(settings["STRIPE_SECRET_KEY"]).encode()).hexdigest()[:16]
    prefix = settings.get("RATELIMIT_KEY_PREFIX") or "crowdfund"
    # Bursts of a fifth of a second's requests: a quiet moment's checkouts go at
    # once, and no second sees more than 1.2 times the rate.
    return make_bucket(
        rate,
        burst=max(1, rate // 5),
        redis_url=settings.get("REDIS_URL") or "",
        key=f"{prefix}:stripe-requests:{account}",
    )


def _secret_box(settings: Mapping[str, Any]) -> SecretBox:
    keys = str(settings.get("PAYOUT_DETAILS_KEYS") or "")
    if keys:
        return secret_box_from(keys)
    if settings.get("ENV_NAME") == "production":
        raise RuntimeError(
            "Set PAYOUT_DETAILS_KEYS (a Fernet key) to store bank details (docs/operations.md)."
        )
    secret = str(settings.get("SECRET_KEY") or "development")
    return SecretBox([base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()).decode()])


def build_services(settings: Mapping[str, Any]) -> AppServices:
    """The services for `settings` (an app's config: see config.py for the keys)."""
    engine = dbmod.make_engine(
        settings["DATABASE_URL"],
        pool_size=settings["DATABASE_POOL_SIZE"],
        ping_idle_seconds=settings["DATABASE_PING_IDLE_SECONDS"],
        recycle_seconds=settings["DATABASE_POOL_RECYCLE_SECONDS"],
    )
    sessions = dbmod.make_sessionmaker(engine)
    mailer = mailer_from_config(settings)
    services = AppServices(
        engine=engine,
        sessions=sessions,
        clock=dbmod.utcnow,
        gateway=StripeGateway(
            settings["STRIPE_SECRET_KEY"],
            settings["STRIPE_API_BASE"],
            settings["STRIPE_WEBHOOK_SECRET"],
            timeout_seconds=settings["STRIPE_TIMEOUT_SECONDS"],
            max_network_retries=settings["STRIPE_MAX_NETWORK_RETRIES"],
            rate_limit=stripe_bucket(settings),
        ),
        mailer=mailer,
        # The outbox's sender: woken after each commit that queued mail (never
        # sending inside the request), plus the scheduled `mail.deliver` task (and `flask mail deliver`) as a sweep.
        mail_delivery=MailDelivery(
            sessions,
            mailer,
            batch_size=settings["MAIL_BATCH_SIZE"],
            max_attempts=settings["MAIL_MAX_ATTEMPTS"],
            retry_seconds=settings["MAIL_RETRY_SECONDS"],
            sweep_seconds=settings["MAIL_SWEEP_SECONDS"],
            background=settings["MAIL_DELIVERY_THREAD"],
        ),
        password_hasher=passwords.make_hasher(
            settings["PASSWORD_TIME_COST"], settings["PASSWORD_MEMORY_COST_KIB"]
        ),
        hold_terms_cache=HoldTermsCache(),
        handoff=Handoff(),
        public_url=settings["PUBLIC_URL"].rstrip("/"),
        secret_box=_secret_box(settings),
    )
    # Without a task queue, mail is sent by the delivery thread (if enabled).
    services.handoff.mail_fallback = services.mail_delivery.wake
    services.bind_sessions()
    return services

"""What every benchmark needs: a fresh PostgreSQL database of its own, dropped after, and the app's services."""

from typing import Any

from cryptography.fernet import Fernet

from crowdfund.migrate import create_database, drop_database

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: Production needs a key to seal bank details with; the benches make one per process.
BENCH_PAYOUT_KEY = Fernet.generate_key().decode()

__all__ = ["BENCH_PAYOUT_KEY", "DEFAULT_URL", "bench_services", "create_database", "drop_database"]


def bench_services(url: str, **settings: Any) -> Any:
    """The app's services (crowdfund.app_services) on `url`, as production
    configures them, with mail to nowhere and no delivery thread (e-mail is
    measured apart: it is I/O, not the job), the engine as make_engine(url)
    makes it (no recycling), and `settings` on top."""
    from config import config_for
    from crowdfund.app_services import build_services

    values = config_for("production")
    # localstripe is no Stripe: measure the job, not the Stripe rate limit (a setting may put it back).
    values["STRIPE_MAX_REQUESTS_PER_SECOND"] = 0
    values["PAYOUT_DETAILS_KEYS"] = BENCH_PAYOUT_KEY
    values.update(DATABASE_URL=url, MAIL_BACKEND="none", MAIL_DELIVERY_THREAD=False,
                  DATABASE_POOL_RECYCLE_SECONDS=-1, **settings)
    return build_services(values)

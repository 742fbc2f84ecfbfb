"""`make demo`: localstripe on 127.0.0.1, a fresh migrated database with demo
data bought through the real payment flow, and the app on 127.0.0.1:5000.

Only for development: Flask's own server and the development config.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from config import instance_folder
from crowdfund.app import create_app
from crowdfund.dev.demo import DEMO_PASSWORD, demo_command, seed
from crowdfund.dev.jobs import DEMO_SCHEDULE_SECONDS, start_in_process
from crowdfund.dev.localstripe_server import LocalStripe, register_webhook, start_in_thread
from crowdfund.migrate import upgrade
from crowdfund.site.web import app_services
from crowdfund.worker import make_celery

HOST = "127.0.0.1"
# localstripe takes any key of the right shape; these authenticate us to it, not anyone to us.
STRIPE_SECRET_KEY = "sk_test_demo"
PUBLISHABLE_KEY = "pk_test_demo"


def make_app(stripe: LocalStripe, overrides: dict[str, Any] | None = None) -> Flask:
    """The development app against localstripe. Its session and webhook secrets
    come from its instance folder (config.development_secrets), made on first run."""
    app = create_app(
        "development",
        {
            "STRIPE_API_BASE": stripe.url,
            "STRIPE_SECRET_KEY": STRIPE_SECRET_KEY,
            "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
            "STRIPE_JS_URL": stripe.js_url,
            **(overrides or {}),
        },
    )
    return app


def cli_app() -> Flask:
    """`flask --app crowdfund.dev.server:cli_app demo seed`: the demo data without a server."""
    app = create_app("development")
    app.cli.add_command(demo_command)
    return app


def register_demo_webhook(app: Flask, stripe_url: str, target_url: str) -> None:
    """localstripe signs its deliveries with the secret the app verifies them with."""
    register_webhook(stripe_url, "demo", target_url, app.config["STRIPE_WEBHOOK_SECRET"])


def main() -> None:
    os.environ.setdefault("CROWDFUND_ENV", "development")
    # Read when the demo starts, not when this module is imported.
    port = int(os.environ.get("PORT", "5000"))
    stripe = start_in_thread(int(os.environ.get("LOCALSTRIPE_PORT", "8420")))
    app = make_app(stripe, dict(DEMO_SCHEDULE_SECONDS))
    services = app_services(app)
    register_demo_webhook(app, stripe.url, f"http://{HOST}:{port}/stripe/webhook")
    upgrade(app.config["DATABASE_URL"])
    print("Seeding demo data (fans buy stakes through localstripe)...")
    with services.sessions() as session:
        logins = seed(
            session, services.gateway, stripe.url, PUBLISHABLE_KEY, fee_bps=app.config["PLATFORM_FEE_BPS"]
        )
    print(f"\nReelshare demo at http://{HOST}:{port}   (localstripe at {stripe.url})")
    print(f"Logins (password for all: {DEMO_PASSWORD}):")
    for role, email in logins:
        print(f"  {role:8} {email}")
    print(
        "Test cards: 4242 4242 4242 4242 pays, 4000 0000 0000 0341 declines, 4000 0025 0000 3155 asks for 3-D Secure."
    )
    print(f"Mail is written to {app.config['MAIL_FOLDER']}")
    # The jobs (round close and its refunds, reconcile, payouts, mail) run by themselves.
    start_in_process(make_celery(app), instance_folder(app.config["DATABASE_URL"]) / "celery")
    print("A Celery worker and the scheduler run in this process (round close every 20 s).\n")
    app.run(host=HOST, port=port, debug=False, use_reloader=False, threaded=True)


if __name__ == "__main__":
    main()

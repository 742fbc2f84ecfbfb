"""The development configuration (`make demo`) signs sessions and webhooks with
secrets made for its own database, kept in files beside it; the repository
holds none, so no cookie can be forged for another deployment."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

import config
from crowdfund.app import create_app
from crowdfund.dev import server as devserver
from crowdfund.dev.localstripe_server import LocalStripe, confirm_card_setup, register_webhook
from crowdfund.migrate import upgrade
from crowdfund.site.web import app_services
from tests.localstripe_fixture import PUBLISHABLE_KEY


@pytest.fixture
def no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config.DevelopmentConfig, "SECRET_KEY", None)
    monkeypatch.setattr(config.DevelopmentConfig, "STRIPE_WEBHOOK_SECRET", "")


def dev_app(folder: Path, **overrides: object):  # type: ignore[no-untyped-def]
    return create_app(
        "development",
        {"DATABASE_URL": f"sqlite:///{folder / 'demo.db'}", "MAIL_BACKEND": "none", **overrides},
    )


def test_each_fresh_instance_gets_its_own_secrets(tmp_path: Path, no_secret_env: None) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    a, b = dev_app(first), dev_app(second)
    for key in ("SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
        assert a.config[key] and b.config[key] and a.config[key] != b.config[key], key
        assert len(a.config[key]) >= 32
    assert a.config["STRIPE_WEBHOOK_SECRET"].startswith("whsec_")
    # Kept: the same instance starts with the same secrets (sessions survive a restart).
    again = dev_app(first)
    assert (again.config["SECRET_KEY"], again.config["STRIPE_WEBHOOK_SECRET"]) == (
        a.config["SECRET_KEY"],
        a.config["STRIPE_WEBHOOK_SECRET"],
    )
    files = sorted(p.name for p in first.iterdir() if p.name != "demo.db")
    assert files == ["secret_key", "stripe_webhook_secret"]
    for name in files:
        assert stat.S_IMODE((first / name).stat().st_mode) == 0o600, name
        assert (first / name).read_text().strip() in (
            a.config["SECRET_KEY"],
            a.config["STRIPE_WEBHOOK_SECRET"],
        )
    # A secret from the environment still wins.
    assert (
        dev_app(tmp_path / "three", SECRET_KEY="from-the-environment").config["SECRET_KEY"]
        == "from-the-environment"
    )
    for app in (a, b, again):
        app_services(app).gateway.close()
        app_services(app).engine.dispose()


def test_the_repository_holds_no_development_secret() -> None:
    root = Path(config.__file__).parent
    for path in (
        root / "config.py",
        root / "crowdfund" / "dev" / "server.py",
        root / "crowdfund" / "dev" / "demo.py",
    ):
        source = path.read_text()
        assert "dev-only-not-secret" not in source and "whsec_demo" not in source, path
    assert "whsec_" not in (root / "crowdfund" / "dev" / "server.py").read_text()


def test_the_dev_server_verifies_localstripe_webhooks_with_its_own_secret(
    tmp_path: Path, no_secret_env: None, localstripe: LocalStripe
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    upgrade(url)
    app = devserver.make_app(localstripe, {"DATABASE_URL": url, "MAIL_BACKEND": "none"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    engine = create_engine(url)
    try:
        devserver.register_demo_webhook(
            app, localstripe.url, f"http://127.0.0.1:{server.server_port}/stripe/webhook"
        )
        gateway = app_services(app).gateway
        setup = gateway.create_setup_intent({})
        confirm_card_setup(localstripe.url, PUBLISHABLE_KEY, setup.client_secret, "4242424242424242")
        intent = gateway.create_payment_intent(
            5000, "usd", {"order_id": "0"}, payment_method_id=gateway.retrieve_setup_intent(setup.id)
        )
        gateway.confirm_payment_intent(intent, gateway.retrieve_setup_intent(setup.id))
        # localstripe signs with the secret devserver registered; the app only records verified events.
        deadline = time.monotonic() + 30
        types: list[str] = []
        while time.monotonic() < deadline and "payment_intent.succeeded" not in types:
            time.sleep(0.2)
            with engine.connect() as conn:
                types = list(conn.execute(text("SELECT type FROM stripe_events")).scalars())
        assert "payment_intent.succeeded" in types, types
    finally:
        register_webhook(localstripe.url, "demo", "http://127.0.0.1:9/closed", "whsec_closed")
        server.shutdown()
        thread.join(timeout=5)
        engine.dispose()
        app_services(app).gateway.close()
        app_services(app).engine.dispose()

"""Faults, each a test: the database gone, Stripe down or slow, the process
killed between Stripe's answer and our commit, a round close killed midway.
Nothing is lost, nothing half-written, no money without stakes or stakes
without money."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from crowdfund import ledger
from crowdfund.app import create_app
from crowdfund.dev.localstripe_server import confirm_card_setup
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import FilmInventory, Order, OrderStatus, StripeEvent
from crowdfund.ledger import Account
from crowdfund.site.web import app_services
from crowdfund.workflows.checkout import checkout_setup_intent
from crowdfund.workflows.reconcile import reconcile
from crowdfund.workflows.refunds import REFUND_CLAIM_TIMEOUT
from tests.conftest import CheckSession, Client
from tests.factories import GOOD_CARD, PASSWORD, buy, hold, make_film, make_studio_user, make_user

# Subprocesses, other app instances and killed connections: only committed rows are seen.
pytestmark = pytest.mark.committing

ROOT = Path(__file__).resolve().parents[2]


def other_app(app: Flask, **overrides: object) -> Flask:
    config = {
        key: app.config[key]
        for key in (
            "DATABASE_URL",
            "STRIPE_API_BASE",
            "STRIPE_SECRET_KEY",
            "STRIPE_PUBLISHABLE_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "STRIPE_JS_URL",
            "MAIL_BACKEND",
            "MAIL_PORT",
        )
    }
    config.update(overrides)
    return create_app("testing", config)


def client_for(app: Flask) -> Client:
    app.test_client_class = Client
    return app.test_client()  # type: ignore[return-value]


@pytest.fixture
def film(db: CheckSession):  # type: ignore[no-untyped-def]
    return make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=20_000,
    )


# --- the database ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://postgres@127.0.0.1:1/nowhere", "sqlite:////nonexistent-directory/crowdfund.db"],
)
def test_database_unreachable_gives_a_503_page(url: str) -> None:
    broken = create_app("testing", {"DATABASE_URL": url})
    try:
        response = broken.test_client().get("/")
        assert response.status_code == 503
        assert b"We cannot reach our database right now. Nothing was changed" in response.data
    finally:
        app_services(broken).engine.dispose()


def test_database_lost_mid_request_writes_nothing(client: Client, db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    client.login(fan.email, PASSWORD)
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    key = page.split('name="key" value="')[1].split('"')[0]
    engine = app_services(app).engine

    def connection_dies(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        # The hold has reserved the backer's position and the film's units by now.
        if "INSERT INTO orders" in statement:
            raise OperationalError(
                statement, parameters, Exception("server closed the connection unexpectedly")
            )

    event.listen(engine, "before_cursor_execute", connection_dies)
    try:
        response = client.post_form(f"/films/{film.slug}/hold", {"units": "3", "key": key})
    finally:
        event.remove(engine, "before_cursor_execute", connection_dies)
    assert response.status_code == 503 and b"Nothing was changed" in response.data
    db.reread()
    assert db.scalar(select(func.count()).select_from(Order)) == 0
    inventory = db.get(FilmInventory, film.id)
    assert (inventory.sold, inventory.held) == (0, 0)
    # And the same form works once the database is back.
    assert client.post_form(f"/films/{film.slug}/hold", {"units": "3", "key": key}).status_code == 303


@pytest.mark.parametrize("ping_idle_seconds, first_status", [(0, 200), (3600, 503)])
def test_a_pooled_connection_killed_while_idle(app: Flask, ping_idle_seconds: int, first_status: int) -> None:
    """PostgreSQL restarted (here: the pooled connection's backend terminated)
    while the app was idle. A connection idle longer than
    DATABASE_PING_IDLE_SECONDS is tested and replaced before use, so no one sees
    an error; a busy one (idle less than that) fails one request with a 503 and
    the pool is renewed for the next."""
    if app_services(app).engine.dialect.name != "postgresql":
        pytest.skip("SQLite connections are files: they do not go stale")
    pooled = other_app(app, DATABASE_POOL_SIZE=1, DATABASE_PING_IDLE_SECONDS=ping_idle_seconds)
    engine = app_services(pooled).engine
    try:
        client = pooled.test_client()
        assert client.get("/").status_code == 200
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with app_services(app).engine.connect() as killer:
            assert killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar_one()
        time.sleep(0.2)
        response = client.get("/")
        assert response.status_code == first_status
        if first_status == 503:
            assert b"Nothing was changed" in response.data
        assert client.get("/").status_code == 200
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
    finally:
        engine.dispose()


@pytest.mark.parametrize("recycle_seconds, replaced", [(1, True), (-1, False)])
def test_pooled_connections_are_replaced_after_recycle_seconds(
    app: Flask, recycle_seconds: int, replaced: bool
) -> None:
    """The pool replaces a connection older than DATABASE_POOL_RECYCLE_SECONDS,
    so no backend keeps query plans from long ago (bench/README.md, "Generic
    plans cached while the tables were empty")."""
    if app_services(app).engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server backend to replace")
    pooled = other_app(app, DATABASE_POOL_SIZE=1, DATABASE_POOL_RECYCLE_SECONDS=recycle_seconds)
    engine = app_services(pooled).engine
    try:
        with engine.connect() as conn:
            first = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        time.sleep(1.2)
        assert pooled.test_client().get("/").status_code == 200
        with engine.connect() as conn:
            second = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        assert (second != first) == replaced
    finally:
        engine.dispose()


# --- Stripe ----------------------------------------------------------------------------------


def test_stripe_down_gives_a_clear_message_and_charges_nothing(db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    down = other_app(
        app, STRIPE_API_BASE="http://127.0.0.1:1", STRIPE_TIMEOUT_SECONDS=2, STRIPE_MAX_NETWORK_RETRIES=0
    )
    try:
        fan = make_user(db)
        order = hold(db, fan, film, 2)
        client = client_for(down)
        client.login(fan.email, PASSWORD)
        checkout = client.get(f"/orders/{order.reference}/checkout")
        assert checkout.status_code == 503
        assert b"The payment service could not be reached" in checkout.data
        # The card was set up while Stripe answered; it is down when the fan pays.
        setup = checkout_setup_intent(db, order, app_services(app).gateway)
        confirm_card_setup(
            app.config["STRIPE_API_BASE"],
            app.config["STRIPE_PUBLISHABLE_KEY"],
            setup.client_secret,
            GOOD_CARD,
        )
        paid = client.post_form(
            f"/orders/{order.reference}/pay", {"setup_intent": setup.id}, follow_redirects=True
        )
        assert paid.status_code == 200 and b"could not be reached" in paid.data
        db.reread()
        order = db.get(Order, order.id)
        assert order.status == OrderStatus.PENDING and order.stripe_payment_intent_id is None
        assert ledger.balance(db, Account.BACKER_CASH) == 0
    finally:
        app_services(down).engine.dispose()
        app_services(down).gateway.close()


class SlowProxy:
    """Forwards to localstripe, holding the charge (PaymentIntent confirm) back
    longer than the app waits: Stripe charges while the app has given up."""

    def __init__(self, target: str, delay: float) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                if self.path.endswith("/confirm") and "/payment_intents/" in self.path:
                    time.sleep(delay)
                request = urllib.request.Request(target + self.path, data=body or None, method=self.command)
                for name in ("Authorization", "Content-Type", "Idempotency-Key", "Stripe-Version"):
                    if self.headers.get(name):
                        request.add_header(name, self.headers[name])
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, payload = answer.status, answer.read()
                except urllib.error.HTTPError as error:
                    status, payload = error.code, error.read()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the app gave up waiting

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        del proxy

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_stripe(app: Flask) -> Iterator[SlowProxy]:
    proxy = SlowProxy(app.config["STRIPE_API_BASE"], delay=2.5)
    yield proxy
    proxy.close()


def test_stripe_slow_during_payment_then_reconciled(db: CheckSession, app: Flask, film, slow_stripe) -> None:  # type: ignore[no-untyped-def]
    slow = other_app(
        app, STRIPE_API_BASE=slow_stripe.url, STRIPE_TIMEOUT_SECONDS=1, STRIPE_MAX_NETWORK_RETRIES=0
    )
    try:
        fan = make_user(db)
        order = hold(db, fan, film, 2)
        client = client_for(slow)
        client.login(fan.email, PASSWORD)
        page = client.get(f"/orders/{order.reference}/checkout").get_data(as_text=True)
        secret = page.split('data-client-secret="')[1].split('"')[0]
        setup = confirm_card_setup(
            app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, GOOD_CARD
        )
        response = client.post_form(
            f"/orders/{order.reference}/pay", {"setup_intent": setup["id"]}, follow_redirects=True
        )
        text = response.get_data(as_text=True)
        assert "If your card was charged, your order completes by itself" in text
        time.sleep(2)  # the held-back charge reaches Stripe
        db.reread()
        order = db.get(Order, order.id)
        # No paid order without a charge: the app did not hear back, so it is still pending,
        # and no charge without an order: the charge's PaymentIntent is on record.
        assert order.status == OrderStatus.PENDING and order.stripe_payment_intent_id
        gateway = app_services(app).gateway
        assert gateway.retrieve_payment_intent(order.stripe_payment_intent_id).status == "succeeded"
        assert reconcile(db, gateway, now=datetime.now(UTC))["paid"] == 1
        db.reread()
        assert db.get(Order, order.id).status == OrderStatus.PAID
        assert ledger.balance(db, Account.BACKER_CASH) == order.amount_cents
    finally:
        app_services(slow).engine.dispose()
        app_services(slow).gateway.close()


# --- a process killed at the worst moment ------------------------------------------------------


def run_dying(app: Flask, *args: str) -> int:
    config = {
        key: app.config[key]
        for key in (
            "DATABASE_URL",
            "STRIPE_API_BASE",
            "STRIPE_SECRET_KEY",
            "STRIPE_PUBLISHABLE_KEY",
            "STRIPE_WEBHOOK_SECRET",
        )
    }
    config["MAIL_BACKEND"] = "none"
    result = subprocess.run(
        [sys.executable, "-m", "tests.faults.die_midway", json.dumps(config), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 17:  # not the planned death: show why (pytest prints it with the failure)
        print(f"die_midway {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.returncode


def test_killed_after_the_charge_before_the_commit(db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    order = hold(db, fan, film, 2)
    gateway = app_services(app).gateway
    setup = checkout_setup_intent(db, order, gateway)
    confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], setup.client_secret, GOOD_CARD
    )
    assert run_dying(app, "after-charge", str(order.id), setup.id) == 17
    db.reread()
    order = db.get(Order, order.id)
    assert order.status == OrderStatus.PENDING  # the process died before recording the charge
    assert gateway.retrieve_payment_intent(order.stripe_payment_intent_id).status == "succeeded"
    assert reconcile(db, gateway, now=datetime.now(UTC))["paid"] == 1
    db.reread()
    assert db.get(Order, order.id).status == OrderStatus.PAID
    assert ledger.trial_balance(db) == 0 and ledger.balance(db, Account.BACKER_CASH) == 10_000


def test_close_rounds_killed_midway_refunds_each_order_once(db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    fans = [make_user(db) for _ in range(3)]
    for fan in fans:
        buy(db, app, fan, film, 1)  # $150 of a $200 goal: the round fails
    # 3 refund decisions are booked, then Stripe refunds order 1 and 2; die recording the 2nd.
    closing = film.deadline + timedelta(minutes=16)
    assert run_dying(app, "close-rounds", "5", closing.isoformat()) == 17
    db.reread()
    assert db.get(Film, film.id).state == FilmState.FAILED
    gateway = app_services(app).gateway
    from crowdfund.workflows.round_close import close_rounds

    # The dead worker's claim on the second refund is honoured until it goes stale
    # (another worker might still be finishing it); then a rerun checks Stripe first.
    report = close_rounds(
        db,
        gateway,
        now=closing + REFUND_CLAIM_TIMEOUT + timedelta(minutes=1),
        hold_window=timedelta(minutes=15),
        fee_bps=500,
    )
    db.reread()
    orders = db.scalars(select(Order).where(Order.film_id == film.id)).all()
    assert {o.status for o in orders} == {OrderStatus.REFUNDED} and {o.refund_state for o in orders} == {
        "done"
    }
    for order in orders:
        assert len(gateway.find_refunds(order.stripe_payment_intent_id)) == 1, order.reference
    assert report.refunds_made == 2  # the one finished before the crash is not touched again
    assert ledger.balance(db, Account.BACKER_CASH) == 0 and ledger.trial_balance(db) == 0


# --- no database transaction open while Stripe is asked (issue 12, item 6) -------------------------


class StripeProxy:
    """Forwards every request to localstripe; `before(method, path)` runs
    first and may answer instead (a status code) or hold the request."""

    def __init__(self, target: str) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                refusal = proxy.before(self.command, self.path.split("?")[0])
                if refusal is not None:
                    status, payload = (
                        refusal,
                        b'{"error": {"type": "api_error", "message": "refused by the test"}}',
                    )
                else:
                    request = urllib.request.Request(
                        target + self.path, data=body or None, method=self.command
                    )
                    for name in ("Authorization", "Content-Type", "Idempotency-Key", "Stripe-Version"):
                        if self.headers.get(name):
                            request.add_header(name, self.headers[name])
                    try:
                        with urllib.request.urlopen(request, timeout=30) as answer:
                            status, payload = answer.status, answer.read()
                    except urllib.error.HTTPError as error:
                        status, payload = error.code, error.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def before(self, method: str, path: str) -> int | None:
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GatedProxy(StripeProxy):
    """Holds the first request that `gate_on` (method, part of the path)
    matches until the test calls release(); `held` is set once it waits."""

    def __init__(self, target: str, gate_on: tuple[str, str]) -> None:
        self.gate_on = gate_on
        self.held = threading.Event()
        self.released = threading.Event()
        super().__init__(target)

    def before(self, method: str, path: str) -> int | None:
        if method == self.gate_on[0] and self.gate_on[1] in path and not self.held.is_set():
            self.held.set()
            self.released.wait(timeout=60)
        return None

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        super().close()


def open_transactions(app: Flask) -> int:
    """Other connections to the test database sitting inside a transaction."""
    with app_services(app).engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state IN ('idle in transaction', 'idle in transaction (aborted)')"
            ).scalar_one()
        )


@pytest.mark.parametrize(
    "gate_on", [("GET", "/v1/setup_intents/"), ("POST", "/confirm")], ids=["reading-the-card", "charging"]
)
def test_pay_waiting_on_stripe_holds_no_database_lock(
    db: CheckSession,
    app: Flask,
    film,  # type: ignore[no-untyped-def]
    gate_on: tuple[str, str],
) -> None:
    payer, other_fan = make_user(db), make_user(db)
    order = hold(db, payer, film, 2)
    paying = client_for(app)
    paying.login(payer.email, PASSWORD)
    secret = paying.get(f"/orders/{order.reference}/checkout").get_data(as_text=True)
    secret = secret.split('data-client-secret="')[1].split('"')[0]
    setup = confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, GOOD_CARD
    )
    proxy = GatedProxy(app.config["STRIPE_API_BASE"], gate_on)
    slow = other_app(app, STRIPE_API_BASE=proxy.url, STRIPE_MAX_NETWORK_RETRIES=0, STRIPE_TIMEOUT_SECONDS=90)
    try:
        pay_client = client_for(slow)
        pay_client.login(payer.email, PASSWORD)
        other = client_for(app)
        other.login(other_fan.email, PASSWORD)
        token = pay_client.csrf_token()
        db.close()  # the test's own session holds nothing either
        paid: dict[str, int] = {}
        pay_thread = threading.Thread(
            target=lambda: paid.setdefault(
                "status",
                pay_client.post(
                    f"/orders/{order.reference}/pay", data={"setup_intent": setup["id"], "csrf_token": token}
                ).status_code,
            )
        )
        pay_thread.start()
        assert proxy.held.wait(timeout=30), "pay never reached Stripe"
        # The pay request is inside Stripe now. Another fan holds stakes meanwhile.
        if app_services(app).engine.dialect.name == "postgresql":
            assert open_transactions(app) == 0
        held: dict[str, int] = {}
        done = threading.Event()

        def take_a_hold() -> None:
            page = other.get(f"/films/{film.slug}").get_data(as_text=True)
            key = page.split('name="key" value="')[1].split('"')[0]
            held["status"] = other.post_form(
                f"/films/{film.slug}/hold", {"units": "1", "key": key}
            ).status_code
            done.set()

        hold_thread = threading.Thread(target=take_a_hold)
        hold_thread.start()
        # A safety net, not a measurement: the hold must finish while pay is still held in Stripe.
        finished_first = done.wait(timeout=20)
        still_paying = pay_thread.is_alive()
        proxy.release()
        pay_thread.join(timeout=60)
        hold_thread.join(timeout=60)
        assert finished_first and still_paying, "the hold waited for the pay request's Stripe call"
        assert held["status"] == 303 and paid["status"] == 303
        db.reread()
        assert db.get(Order, order.id).status == OrderStatus.PAID
    finally:
        proxy.close()
        app_services(slow).engine.dispose()
        app_services(slow).gateway.close()


# --- one bad order never stops a batch job (issue 12, item 1: per-order isolation) -----------------


def test_reconcile_goes_on_past_an_order_that_fails_and_exits_non_zero(
    db: CheckSession, app: Flask, film
) -> None:  # type: ignore[no-untyped-def]
    from crowdfund.workflows.reactions import cancel_order

    fans = [make_user(db) for _ in range(2)]
    broken, fine = (buy(db, app, fan, film, 1) for fan in fans)
    for order, fan in ((broken, fans[0]), (fine, fans[1])):
        cancel_order(db, db.get(Order, order.id), fan, now=datetime.now(UTC))
    # The first one's PaymentIntent is one localstripe never heard of.
    db.get(Order, broken.id).stripe_payment_intent_id = "pi_unknown_to_stripe"
    # And the same for settling: a pending order Stripe knows nothing about, before one it does.
    lost = hold(db, make_user(db), film, 1)
    lost.stripe_payment_intent_id = "pi_unknown_pending"
    db.commit()
    from tests.http.test_webhooks import charged_but_unrecorded

    unrecorded = charged_but_unrecorded(db, app)
    result = app.test_cli_runner().invoke(args=["payments", "reconcile"])
    assert result.exit_code != 0
    assert broken.reference in result.output and lost.reference in result.output
    assert fine.reference not in result.output and unrecorded.reference not in result.output
    db.reread()
    assert db.get(Order, unrecorded.id).status == OrderStatus.PAID
    assert db.get(Order, fine.id).refund_state == "done"
    assert db.get(Order, broken.id).refund_state == "requested"  # retried by the next run
    gateway = app_services(app).gateway
    assert len(gateway.find_refunds(db.get(Order, fine.id).stripe_payment_intent_id)) == 1


class LockProbeProxy(StripeProxy):
    """Before passing on each request, looks whether the app holds a database
    transaction open while it waits for Stripe: PostgreSQL shows it in
    pg_stat_activity, SQLite's write lock refuses a BEGIN IMMEDIATE.
    `violations` lists the Stripe calls made with one open."""

    def __init__(self, target: str, app: Flask) -> None:
        self.app = app
        self.calls: list[str] = []
        self.violations: list[str] = []
        super().__init__(target)

    def before(self, method: str, path: str) -> int | None:
        self.calls.append(f"{method} {path}")
        if self._transaction_open():
            self.violations.append(f"{method} {path}")
        return None

    def _transaction_open(self) -> bool:
        url = self.app.config["DATABASE_URL"]
        if not url.startswith("sqlite"):
            return open_transactions(self.app) > 0
        probe = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()


class RefusingProxy(StripeProxy):
    """Answers 500 to every request whose path starts with `prefix` (POST only)."""

    def __init__(self, target: str, prefix: str) -> None:
        self.prefix = prefix
        super().__init__(target)

    def before(self, method: str, path: str) -> int | None:
        return 500 if method == "POST" and path.startswith(self.prefix) else None


def test_no_transaction_is_open_while_stripe_is_asked(db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    """Checkout, pay, cancel and its refund, a webhook, reconcile: every call to
    Stripe is made with no database transaction of the app open."""
    from tests.http.test_webhooks import charged_but_unrecorded, event, post

    proxy = LockProbeProxy(app.config["STRIPE_API_BASE"], app)
    probed = other_app(app, STRIPE_API_BASE=proxy.url)
    try:
        fan = make_user(db)
        order = hold(db, fan, film, 2)
        unrecorded = charged_but_unrecorded(db, app)  # settled by the webhook, below
        for_reconcile = charged_but_unrecorded(db, app)  # settled by reconcile
        db.close()
        client = client_for(probed)
        client.login(fan.email, PASSWORD)
        checkout = f"/orders/{order.reference}/checkout"
        client.get(checkout)
        secret = client.get(checkout).get_data(as_text=True).split('data-client-secret="')[1].split('"')[0]
        setup = confirm_card_setup(
            app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], secret, GOOD_CARD
        )
        assert (
            client.post_form(f"/orders/{order.reference}/pay", {"setup_intent": setup["id"]}).status_code
            == 303
        )
        cancelled = client.post_form(f"/orders/{order.reference}/cancel", follow_redirects=True)
        assert "Your refund is on its way" in cancelled.get_data(as_text=True)
        payload = event(
            "evt_probe", "payment_intent.succeeded", unrecorded.stripe_payment_intent_id, "succeeded"
        )
        assert post(client, payload).status_code == 200
        assert probed.test_cli_runner().invoke(args=["payments", "reconcile"]).exit_code == 0
        assert proxy.violations == []
        assert {
            "POST /v1/setup_intents",
            "GET /v1/setup_intents/" + setup["id"],
            "POST /v1/payment_intents",
            "POST /v1/refunds",
            "GET /v1/payment_intents/" + unrecorded.stripe_payment_intent_id,
            "GET /v1/payment_intents/" + for_reconcile.stripe_payment_intent_id,
        } <= set(proxy.calls)
        db.reread()
        assert db.get(Order, order.id).refund_state == "done"
        assert db.get(Order, unrecorded.id).status == OrderStatus.PAID
        assert db.get(Order, for_reconcile.id).status == OrderStatus.PAID
    finally:
        proxy.close()
        app_services(probed).engine.dispose()
        app_services(probed).gateway.close()


def test_the_webhook_answers_503_while_stripe_cannot_be_asked(db: CheckSession, app: Flask) -> None:
    """The event is not taken at its word, so when Stripe cannot be asked the
    event is refused for now (Stripe sends it again) and nothing changes."""
    from tests.http.test_webhooks import charged_but_unrecorded, event, post

    down = other_app(
        app, STRIPE_API_BASE="http://127.0.0.1:1", STRIPE_TIMEOUT_SECONDS=2, STRIPE_MAX_NETWORK_RETRIES=0
    )
    try:
        order = charged_but_unrecorded(db, app)
        payload = event(
            "evt_while_down", "payment_intent.succeeded", order.stripe_payment_intent_id, "succeeded"
        )
        assert post(client_for(down), payload).status_code == 503
        db.reread()
        assert db.get(Order, order.id).status == OrderStatus.PENDING
        assert db.scalar(select(func.count()).select_from(StripeEvent)) == 0
        # Redelivered once Stripe answers: settled.
        assert post(client_for(app), payload).status_code == 200
        db.reread()
        assert db.get(Order, order.id).status == OrderStatus.PAID
    finally:
        app_services(down).engine.dispose()
        app_services(down).gateway.close()


def test_an_anomaly_refund_stripe_refused_is_made_by_reconcile(db: CheckSession, app: Flask) -> None:
    from crowdfund.funding.models import PaymentAnomaly
    from tests.http.test_webhooks import event, held_order, paid_intent, post

    refusing = RefusingProxy(app.config["STRIPE_API_BASE"], "/v1/refunds")
    flaky = other_app(app, STRIPE_API_BASE=refusing.url, STRIPE_MAX_NETWORK_RETRIES=0)
    try:
        order = held_order(db)
        intent_id = paid_intent(app, 700, {"order_id": str(order.id), "order_reference": order.reference})
        payload = event("evt_refund_refused", "payment_intent.succeeded", intent_id, "succeeded")
        assert post(client_for(flaky), payload).status_code == 200  # recorded; the refund waits
        db.reread()
        anomaly = db.scalars(select(PaymentAnomaly)).one()
        assert anomaly.state == "refund_owed" and ledger.balance(db, Account.UNMATCHED_PAYMENTS) == -700
        gateway = app_services(app).gateway
        assert gateway.find_refunds(intent_id) == []
        assert reconcile(db, gateway, now=datetime.now(UTC))["anomaly_refunds"] == 1
        db.reread()
        assert db.get(PaymentAnomaly, anomaly.id).state == "refunded"
        assert [r.amount_cents for r in gateway.find_refunds(intent_id)] == [700]
        assert (
            ledger.balance(db, Account.UNMATCHED_PAYMENTS) == 0
            and ledger.balance(db, Account.BACKER_CASH) == 0
        )
        assert db.get(Order, order.id).status == OrderStatus.PENDING
    finally:
        refusing.close()
        app_services(flaky).engine.dispose()
        app_services(flaky).gateway.close()

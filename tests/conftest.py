"""Shared fixtures: a migrated database (SQLite file, or TEST_DATABASE_URL), the
app, a test client with a real CSRF flow, and a clean database for each test.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from crowdfund import scheduled
from crowdfund.app import create_app, install_services
from crowdfund.db import sqlite_begin_mode
from crowdfund.dev.localstripe_server import LocalStripe
from crowdfund.migrate import create_database, drop_database, upgrade
from crowdfund.models import metadata
from crowdfund.outbox.running import RunOutcome
from crowdfund.session_services import SERVICES_KEY
from crowdfund.site.web import app_services
from tests.localstripe_fixture import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET, localstripe  # noqa: F401

POSTGRES = bool(os.environ.get("TEST_DATABASE_URL"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if POSTGRES:
        # A brand-new database next to TEST_DATABASE_URL's: one run never sees another's tables.
        url = create_database(
            os.environ["TEST_DATABASE_URL"], make_url(os.environ["TEST_DATABASE_URL"]).database
        )
        upgrade(url)
        yield url
        drop_database(url)
    else:
        path: Path = tmp_path_factory.mktemp("db") / "test.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MailCapture:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives.

    The app sends from its outbox after commit, in the background (off in
    tests): reading `messages` or `to()` first delivers what is pending, from
    the test's thread, so tests see every committed mail deterministically.
    `received` is what arrived so far, without delivering anything.
    """

    def __init__(self, port: int | None = None) -> None:
        """On `port` (one nothing listens on), else on a free one."""
        from aiosmtpd.controller import Controller

        self.received: list[EmailMessage] = []
        #: The app's outbox delivery (set by the `app` fixture).
        self.deliver: Callable[[], object] | None = None
        #: Run first (the `mail` fixture ends the test's `db` transaction, see there).
        self.before_delivery: Callable[[], object] | None = None
        capture = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
                capture.received.append(message_from_bytes(envelope.content, policy=default_policy))
                return "250 OK"

        # aiosmtpd checks readiness by connecting to its port, so it needs a real one.
        self.port = port or free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    @property
    def messages(self) -> list[EmailMessage]:
        if self.deliver is not None:
            if self.before_delivery is not None:
                self.before_delivery()
            self.deliver()
        return self.received

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[MailCapture]:
    capture = MailCapture()
    yield capture
    capture.stop()


@pytest.fixture
def mail(smtp_server: MailCapture, request: pytest.FixtureRequest) -> Iterator[MailCapture]:
    """The mail received during this test."""
    smtp_server.received.clear()
    if "db" in request.fixturenames:
        # Delivery writes the outbox rows. On SQLite a `db` transaction that read
        # before that write could not write afterwards (its snapshot is stale),
        # so the test's session ends its transaction first, keeping what it wrote.
        check_session = request.getfixturevalue("db")
        smtp_server.before_delivery = lambda: (
            check_session.commit() if check_session.in_transaction() else None
        )
    yield smtp_server
    smtp_server.before_delivery = None


@pytest.fixture(scope="session")
def app(database_url: str, localstripe: LocalStripe, smtp_server: MailCapture) -> Iterator[Flask]:
    app = create_app(
        "testing",
        {
            "DATABASE_URL": database_url,
            "STRIPE_API_BASE": localstripe.url,
            "STRIPE_SECRET_KEY": SECRET_KEY,
            "STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_JS_URL": localstripe.js_url,
            "STRIPE_TIMEOUT_SECONDS": 10,
            "MAIL_BACKEND": "smtp",
            "MAIL_PORT": smtp_server.port,
        },
    )
    smtp_server.deliver = app_services(app).mail_delivery.deliver_pending
    yield app
    smtp_server.deliver = None
    app_services(app).gateway.close()
    app_services(app).engine.dispose()


class Clock:
    """The app's clock in tests: real time unless a test sets it."""

    def __init__(self) -> None:
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return self.frozen or datetime.now(UTC)

    def set(self, when: datetime) -> None:
        self.frozen = when


@pytest.fixture
def clock(app: Flask) -> Iterator[Clock]:
    """Freeze or move the app's time with `clock.set(...)`."""
    clock = Clock()
    original = app_services(app)
    install_services(app, original.with_clock(clock))
    yield clock
    install_services(app, original)


class Jobs:
    """What the workers would do, done here: every due outbox row, run in
    this process by the same code a worker runs (crowdfund/scheduled.py)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def run(self) -> list[RunOutcome]:
        with self.app.app_context():
            return scheduled.run_pending_job()


@pytest.fixture
def jobs(app: Flask) -> Jobs:
    return Jobs(app)


def _truncate(app: Flask) -> None:
    # The app may keep a film's hold terms by slug (films are never deleted in
    # the app; here they are, and the next test reuses their slugs).
    app_services(app).hold_terms_cache.clear()
    engine = app_services(app).engine
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # A connection left inside a transaction must fail the run, not hang it.
            conn.execute(text("SET LOCAL lock_timeout = '20s'"))
            conn.execute(
                text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
            )
        else:
            for table in tables:
                conn.execute(text(f'DELETE FROM "{table}"'))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A live server answers from its own thread, on its own connection: it
    # sees only what was committed. Browser tests all drive one (some ask for
    # it by name at run time, which collection cannot see).
    for item in items:
        if "live_server" in getattr(item, "fixturenames", ()) or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.committing)


class RolledBackTransaction:
    """One connection inside one transaction for the whole test. Every session
    the app (and the `db` fixture) opens joins it with a SAVEPOINT of its own
    (SQLAlchemy's join_transaction_mode="create_savepoint"): a session's commit
    releases its savepoint, its rollback goes back to it, and the end of the
    test rolls the whole transaction back. On SQLite this relies on the app's
    engine emitting BEGIN itself (pysqlite's own transaction handling off, see
    crowdfund/db.py), the documented workaround that makes SAVEPOINT work.

    Savepoints on one connection nest, so sessions must end in the reverse
    order they began: before any other session begins, the `db` fixture's
    session ends its transaction (commits what it wrote). Otherwise a later
    `db.rollback()` would go back to a savepoint from before the app's work and
    undo it. (The one difference from separate connections: rows `db` flushed
    but did not commit stay, where a later rollback would drop them.) Sessions
    the app or a test opens one inside another must end innermost first; the
    tests that interleave them are marked `committing`.

    The app binds sessions to its engine in two more places (the mail outbox's
    reader and writer, streamed exports, through AppServices.engine): both are
    pointed at the connection for the test (a copy of the app's services).
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.services = app_services(app)
        self.engine = self.services.engine
        self.connection = self.engine.connect()
        self.transaction = self.connection.begin()
        # One connection serves one thread: a thread (a live server, a race) in a
        # test that rolls back fails at once instead of sharing it by chance.
        self._thread = threading.get_ident()
        event.listen(self.connection, "before_cursor_execute", self._same_thread)
        self.check_session: Session | None = None
        self._sessions = self.services.sessions
        self._saved_kw = dict(self._sessions.kw)
        self._sessions.configure(bind=self.connection, join_transaction_mode="create_savepoint")
        event.listen(self._sessions, "after_transaction_create", self._before_other_session)
        self._delivery = self.services.mail_delivery
        self._saved_delivery = (self._delivery._reader, self._delivery._writer)
        self._delivery._reader = self._delivery._writer = self.connection
        install_services(app, dataclasses.replace(self.services, engine=self.connection))

    def _same_thread(self, *_args: Any) -> None:
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "another thread used the connection of a test that rolls back: "
                "mark the test @pytest.mark.committing"
            )

    def _before_other_session(self, session: Session, transaction: Any) -> None:
        check = self.check_session
        if (
            transaction.parent is None
            and session is not check
            and check is not None
            and check.in_transaction()
        ):
            check.commit()

    def close(self) -> None:
        install_services(self.app, self.services)
        self._delivery._reader, self._delivery._writer = self._saved_delivery
        event.remove(self._sessions, "after_transaction_create", self._before_other_session)
        self._sessions.kw.clear()
        self._sessions.kw.update(self._saved_kw)
        if self.transaction.is_active:
            self.transaction.rollback()
        self.connection.close()


@pytest.fixture(autouse=True)
def isolation(request: pytest.FixtureRequest) -> Iterator[RolledBackTransaction | None]:
    """Every test that touches the app starts from empty tables and leaves
    them empty. By default it runs inside one transaction that is rolled back
    at the end (`RolledBackTransaction`). Tests marked `committing` (threads,
    subprocesses, a live server, other connections: they see only what is
    committed) commit for real, and the tables are emptied after them."""
    if "app" not in request.fixturenames:
        yield None
        return
    app: Flask = request.getfixturevalue("app")
    # The app may keep a film's hold terms by slug (films are never deleted in
    # the app; here they are, and the next test reuses their slugs).
    app_services(app).hold_terms_cache.clear()
    if request.node.get_closest_marker("committing"):
        yield None
        app_services(app).hold_terms_cache.clear()
        _truncate(app)
        return
    outer = RolledBackTransaction(app)
    yield outer
    app_services(app).hold_terms_cache.clear()
    outer.close()


class CheckSession(Session):
    def reread(self) -> None:
        """Forget what this session has read, to see what the app wrote since."""
        self.rollback()
        self.expire_all()


@pytest.fixture
def db(app: Flask, isolation: RolledBackTransaction | None) -> Iterator[CheckSession]:
    """A session for arranging and checking data. Writes must be committed
    before the app sees them; call `db.reread()` to see what the app wrote."""
    token = sqlite_begin_mode.set("DEFERRED")
    if isolation is None:
        session = CheckSession(
            bind=app_services(app).engine, expire_on_commit=False, info={SERVICES_KEY: app_services(app)}
        )
    else:
        session = CheckSession(
            bind=isolation.connection,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
            info={SERVICES_KEY: app_services(app)},
        )
        isolation.check_session = session
    yield session
    session.close()
    sqlite_begin_mode.reset(token)


class Statements:
    """The SQL statements the app sends while `counting()` is open, as the
    database receives them (before_cursor_execute on the app's engine, or on
    the test's connection). Transaction control is left out (BEGIN, SAVEPOINT,
    RELEASE, ROLLBACK TO: COMMIT never goes through a cursor), so a count is
    the same whether the test rolls back or commits."""

    _CONTROL = ("BEGIN", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")

    def __init__(self, target: Any) -> None:
        self._target = target
        self.seen: list[str] = []

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(self._CONTROL):
            self.seen.append(statement)

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.seen = []
        event.listen(self._target, "before_cursor_execute", self._record)
        try:
            yield self.seen
        finally:
            event.remove(self._target, "before_cursor_execute", self._record)


@pytest.fixture
def statements(app: Flask) -> Statements:
    """`with statements.counting() as seen:` lists the SQL the app runs meanwhile."""
    return Statements(app_services(app).engine)


_CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


class Client(FlaskClient):
    """A test client that fetches a real CSRF token before each form POST."""

    def csrf_token(self) -> str:
        page = self.get("/login").get_data(as_text=True)
        match = _CSRF_RE.search(page)
        assert match, "no CSRF token on /login"
        return match.group(1) or match.group(2)

    def post_form(self, url: str, data: dict | None = None, **kwargs):  # type: ignore[no-untyped-def]
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf_token())
        return self.post(url, data=data, **kwargs)

    def login(self, email: str, password: str) -> None:
        response = self.post_form("/login", {"email": email, "password": password})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]


@pytest.fixture
def client(app: Flask) -> Client:
    app.test_client_class = Client
    return app.test_client()  # type: ignore[return-value]


@pytest.fixture
def other_client(app: Flask) -> Client:
    app.test_client_class = Client
    return app.test_client()  # type: ignore[return-value]


@pytest.fixture(scope="session")
def live_server(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)

"""Engine, one session per request, the declarative Base and shared column types.

Services receive a `Session` and only flush; the request (or CLI step) that
called them commits once at its boundary. Side effects such as e-mail are
registered with `after_commit(session, fn)` and run only once the outermost
commit has succeeded, so a rolled-back request never triggers them. (E-mail
goes through the outbox in crowdfund/mail/outbox.py; after_commit only wakes its
delivery.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    DateTime,
    Engine,
    Insert,
    MetaData,
    Result,
    Table,
    create_engine,
    event,
    insert,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database.

    SQLite keeps no zone and PostgreSQL's `timestamptz` converts on read;
    storing naive UTC behaves the same on both, and refusing naive input keeps
    local times from sneaking in.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC one is required")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE run through `Session.execute` matched.
    Session.execute is typed to return a Result; for DML it returns a
    CursorResult, which is what carries the count."""
    return cast(CursorResult[Any], result).rowcount


def insert_once(session: Session, table: Table, values: dict[str, Any], *, unique: str = "key") -> int | None:
    """INSERT the row unless one with the same `unique` column exists (ON
    CONFLICT DO NOTHING: no SAVEPOINT, and the caller's transaction stays
    usable either way). Returns the new row's id, or None if it existed.
    RETURNING, not rowcount: PostgreSQL's driver reports no rowcount for it."""
    dialect = session.get_bind().dialect.name
    statement: Insert
    if dialect == "postgresql":
        statement = postgresql.insert(table).values(values).on_conflict_do_nothing(index_elements=[unique])
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(values).on_conflict_do_nothing(index_elements=[unique])
    else:
        statement = insert(table).values(values)
    return session.execute(statement.returning(table.c.id)).scalar_one_or_none()


def utcnow() -> datetime:
    return datetime.now(UTC)


#: How SQLite transactions begin in the current context. IMMEDIATE takes the
#: write lock at BEGIN, so two writers queue on busy_timeout instead of one
#: failing with "database is locked" when it upgrades a read snapshot that
#: another writer made stale. Read-only requests begin DEFERRED so readers
#: never wait on each other.
sqlite_begin_mode: ContextVar[str] = ContextVar("sqlite_begin_mode", default="IMMEDIATE")


@contextmanager
def sqlite_begin(mode: str) -> Iterator[None]:
    token = sqlite_begin_mode.set(mode)
    try:
        yield
    finally:
        sqlite_begin_mode.reset(token)


def make_engine(
    url: str, pool_size: int = 5, ping_idle_seconds: float = 10, recycle_seconds: int = -1, **kwargs: Any
) -> Engine:
    if url.startswith("sqlite"):
        connect_args = {"timeout": 30, "check_same_thread": False}
        if url in ("sqlite://", "sqlite:///:memory:"):
            from sqlalchemy.pool import StaticPool

            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # pysqlite's own BEGIN handling breaks SAVEPOINT and starts write
            # transactions late; SQLAlchemy emits BEGIN itself (below).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            mode = conn.get_execution_options().get("sqlite_begin") or sqlite_begin_mode.get()
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    # recycle_seconds: see DATABASE_POOL_RECYCLE_SECONDS in config.py.
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=recycle_seconds, **kwargs
    )
    _ping_idle_connections(engine, ping_idle_seconds)
    return engine


def _ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """Test a pooled connection before use only if it sat idle `idle_seconds`
    or more: a connection that went stale (PostgreSQL restarted, a proxy timed
    it out) is replaced before the request sees it. SQLAlchemy's pool_pre_ping
    pings on every checkout: a round trip per request that cost the launch-day
    hold path 7% of its CPU (bench/README.md). A connection that dies while busy
    fails that one request (503, nothing written) and the pool is renewed."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out a new one.
            raise DisconnectionError("stale pooled connection") from exc


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """The app's sessionmaker; crowdfund.app_services.build_services makes it
    and puts the app's services in its sessions' info (session_services)."""
    return sessionmaker(engine, expire_on_commit=False)


# --- side effects after commit -------------------------------------------------

_PENDING_KEY = "after_commit"
_ROLLED_BACK_KEY = "after_commit_rolled_back"


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run `fn` once the session's outermost transaction has committed; a
    callback registered several times (equal: the same bound method) runs once.

    A SAVEPOINT released does not run it; a SAVEPOINT rolled back drops what
    was registered inside it and keeps what was registered before it.
    """
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING_KEY, []).append((transaction, fn))


def _rolled_back_within(transaction: Any, rolled_back: list[Any]) -> bool:
    while transaction is not None:
        if any(transaction is t for t in rolled_back):
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a SAVEPOINT was released: not committed yet
        return
    pending = session.info.pop(_PENDING_KEY, [])
    rolled_back = session.info.pop(_ROLLED_BACK_KEY, [])
    done: list[Callable[[], None]] = []
    for transaction, fn in pending:
        # The same callback registered again (a bound method: "deliver the mail") runs once per commit.
        if _rolled_back_within(transaction, rolled_back) or fn in done:
            continue
        done.append(fn)
        try:
            fn()
        except Exception:  # the commit stands; a side effect never turns it into an error
            log.exception("after-commit callback failed")


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session) -> None:
    nested = session.get_nested_transaction()
    if nested is not None:  # a SAVEPOINT rolled back: forget only what it registered
        session.info.setdefault(_ROLLED_BACK_KEY, []).append(nested)
        return
    session.info.pop(_PENDING_KEY, None)
    session.info.pop(_ROLLED_BACK_KEY, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_after_close(session: Session, transaction: Any) -> None:
    # A session closed without committing (no rollback event): nothing carries
    # over into the session's next transaction.
    if transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
        session.info.pop(_ROLLED_BACK_KEY, None)

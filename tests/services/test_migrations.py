"""The schema comes only from Alembic: one head, and no difference between the
models and the migrated database (which the session fixture built)."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import inspect

from crowdfund.migrate import alembic_config
from crowdfund.models import metadata
from crowdfund.site.web import app_services


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1


@pytest.mark.committing  # compares through the engine itself (a connection of its own)
def test_migrated_schema_matches_models(app: Flask) -> None:
    engine = app_services(app).engine
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert (
            context.get_current_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_every_model_table_exists(app: Flask) -> None:
    names = set(inspect(app_services(app).engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= names


def test_one_pending_order_migration_resolves_existing_duplicates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Before the one-pending-order index, a backer could have several pending
    orders of a film: the migration keeps the newest, expires the others and
    gives their units back, so the index can be built."""
    from sqlalchemy import create_engine, text

    from crowdfund.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'before.db'}"
    before = ScriptDirectory.from_config(alembic_config()).get_revision("holds0001").down_revision
    upgrade(url, before)
    engine = create_engine(url)
    stamp = "2026-11-30 12:00:00.000000"
    with engine.begin() as conn:
        _studio_user_and_film(conn, stamp, "funding")
        conn.execute(text("INSERT INTO film_inventory (film_id, cap, sold, held) VALUES (1, 10, 0, 6)"))
        conn.execute(text("INSERT INTO backer_positions (film_id, user_id, units) VALUES (1, 1, 6)"))
        for order_id, units in ((1, 1), (2, 2), (3, 3)):
            conn.execute(
                text(
                    "INSERT INTO orders (id, reference, film_id, user_id, units, unit_price_cents, amount_cents, status, "
                    f"idempotency_key, created_at, expires_at) VALUES ({order_id}, 'RS-{order_id}', 1, 1, {units}, 5000, "
                    f"{units * 5000}, 'pending', 'key-{order_id}', '{stamp}', '{stamp}')"
                )
            )
    upgrade(url)
    with engine.connect() as conn:
        statuses = conn.execute(text("SELECT status FROM orders ORDER BY id")).scalars().all()
        held = conn.execute(text("SELECT held FROM film_inventory")).scalar_one()
        position = conn.execute(text("SELECT units FROM backer_positions")).scalar_one()
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("orders")}
    engine.dispose()
    assert statuses == ["expired", "expired", "pending"]
    assert (held, position) == (3, 3)
    assert "uq_orders_one_pending_per_film" in indexes


def test_refund_state_migration_keeps_refunds_and_refuses_other_states(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """refund_state gets its CHECK (issue 13, point 2) on a database that has
    orders referenced by the ledger: existing refund states stay, and a state
    the refund machine does not know is refused. (SQLite cannot rebuild a
    referenced table with foreign keys on; the migration re-adds the column.)"""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from crowdfund.db import make_engine
    from crowdfund.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'before.db'}"
    upgrade(url, "holds0001")
    engine = make_engine(url)  # foreign keys on, as the app runs
    stamp = "2026-11-30 12:00:00.000000"
    with engine.begin() as conn:
        _studio_user_and_film(conn, stamp, "failed")
        for order_id, refund_state in ((1, "'done'"), (2, "'processing'"), (3, "NULL")):
            conn.execute(
                text(
                    "INSERT INTO orders (id, reference, film_id, user_id, units, unit_price_cents, amount_cents, status, "
                    f"idempotency_key, created_at, expires_at, refund_state) VALUES ({order_id}, 'RS-{order_id}', 1, 1, "
                    f"1, 5000, 5000, 'refunded', 'key-{order_id}', '{stamp}', '{stamp}', {refund_state})"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO journal_entries (key, kind, film_id, order_id, memo, created_at) VALUES "
                    f"('payment:{order_id}', 'payment', 1, {order_id}, '', '{stamp}')"
                )
            )
    engine.dispose()
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        states = conn.execute(text("SELECT refund_state FROM orders ORDER BY id")).scalars().all()
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("orders")}
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    assert states == ["done", "processing", None]
    assert "ix_orders_refund_state" in indexes
    with pytest.raises(IntegrityError, match="ck_orders_refund_state"), engine.begin() as conn:
        conn.execute(text("UPDATE orders SET refund_state = 'failed' WHERE id = 3"))
    engine.dispose()


def _studio_user_and_film(conn, stamp: str, state: str) -> None:  # type: ignore[no-untyped-def]
    """Rows of an older schema, written as SQL: studio 1, user 1 and film 1 in `state`."""
    from sqlalchemy import text

    conn.execute(text(f"INSERT INTO studios (id, name, created_at) VALUES (1, 'S', '{stamp}')"))
    conn.execute(
        text(
            "INSERT INTO users (id, email, display_name, password_hash, session_version, is_active, "
            f"created_at) VALUES (1, 'a@example.com', 'A', 'x', 1, 1, '{stamp}')"
        )
    )
    conn.execute(
        text(
            "INSERT INTO films (id, studio_id, slug, title, logline, synopsis, risks, funding_goal_cents, "
            "stake_price_cents, stake_cap, per_backer_limit, deadline, timezone, expected_release_date, "
            "recoup_share_bps, recoup_multiple_bps, profit_share_bps, state, created_at, updated_at) VALUES "
            f"(1, 1, 'f', 'F', 'l', 's', '', 10000, 5000, 10, 10, '{stamp}', 'UTC', '2027-06-01', 5000, 12000, "
            f"1000, '{state}', '{stamp}', '{stamp}')"
        )
    )

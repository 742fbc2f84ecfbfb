"""The schema comes only from Alembic: one head, and no difference between the
models and the migrated database (which the session fixture built)."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import inspect

from crowdfund.migrate import alembic_config
from crowdfund.models import metadata


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1


def test_migrated_schema_matches_models(app: Flask) -> None:
    engine = app.extensions["crowdfund.engine"]
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert context.get_current_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_every_model_table_exists(app: Flask) -> None:
    names = set(inspect(app.extensions["crowdfund.engine"]).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= names

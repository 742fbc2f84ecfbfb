"""Run Alembic from Python: `upgrade(url)` migrates a database to head."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig

from config import BASE_DIR


def alembic_config(url: str | None = None) -> AlembicConfig:
    cfg = AlembicConfig(str(BASE_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(BASE_DIR / "migrations"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)

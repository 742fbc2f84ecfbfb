"""What every benchmark needs: a fresh PostgreSQL database of its own, dropped after."""

from crowdfund.migrate import create_database, drop_database

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

__all__ = ["DEFAULT_URL", "create_database", "drop_database"]

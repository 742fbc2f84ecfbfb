"""box office and payouts

Revision ID: payouts0001
Revises: 241e56110441
Create Date: 2026-11-25 12:40:00

"""
from collections.abc import Sequence

from alembic import op
import sqlalchemy as sa

revision: str = 'payouts0001'
down_revision: str | None = '241e56110441'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

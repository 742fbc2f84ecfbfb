"""refund state: one of requested, processing, done (or none)

An order's refund_state is moved only by the refund state machine
(crowdfund.transitions, funding.rules.REFUND_TRANSITIONS); the CHECK keeps
the column to its states, like the other state columns.

SQLite cannot add a CHECK to an existing table without rebuilding it, and
rebuilding `orders` (which other tables reference) fails with foreign keys
on; so there the column is re-added with its CHECK (ADD COLUMN may carry
one), copied, and the old column dropped.

Revision ID: transitions0001
Revises: holds0001
Create Date: 2026-12-01 11:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "transitions0001"
down_revision: str | None = "holds0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "refund_state IS NULL OR refund_state IN ('requested', 'processing', 'done')"


def _replace_column_sqlite(check: str | None) -> None:
    constraint = (
        f" CONSTRAINT ck_orders_refund_state CHECK ({check.replace('refund_state', 'refund_state_new')})"
        if check
        else ""
    )
    op.execute(f"ALTER TABLE orders ADD COLUMN refund_state_new VARCHAR(16){constraint}")
    op.execute("UPDATE orders SET refund_state_new = refund_state")
    op.execute("DROP INDEX ix_orders_refund_state")
    op.execute("ALTER TABLE orders DROP COLUMN refund_state")
    op.execute("ALTER TABLE orders RENAME COLUMN refund_state_new TO refund_state")
    op.execute("CREATE INDEX ix_orders_refund_state ON orders (refund_state)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _replace_column_sqlite(CHECK)
        return
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_orders_refund_state"), sa.text(CHECK))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _replace_column_sqlite(None)
        return
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_refund_state"), type_="check")

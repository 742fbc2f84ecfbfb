"""payment anomalies: money at Stripe that matches no order, and its refund

Revision ID: payments0001
Revises: accounts0001
Create Date: 2026-12-01 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payments0001"
down_revision: str | None = "accounts0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_anomalies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("expected_amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("expected_currency", sa.String(length=16), nullable=True),
        sa.Column("actual_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("actual_currency", sa.String(length=16), nullable=False),
        sa.Column("detected_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("refund_claimed_at", sa.DateTime(), nullable=True),
        sa.Column("stripe_refund_id", sa.String(length=255), nullable=True),
        sa.Column("refunded_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_payment_anomalies_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_anomalies")),
        sa.UniqueConstraint("payment_intent_id", name=op.f("uq_payment_anomalies_payment_intent_id")),
    )
    with op.batch_alter_table("payment_anomalies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_anomalies_order_id"), ["order_id"], unique=False)
        batch_op.create_index("ix_payment_anomalies_state", ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payment_anomalies", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_anomalies_state")
        batch_op.drop_index(batch_op.f("ix_payment_anomalies_order_id"))

    op.drop_table("payment_anomalies")

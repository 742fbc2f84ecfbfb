"""payout accounts: the bank account a backer withdraws to, its details sealed at rest

Revision ID: payoutacct0001
Revises: mailtz0001
Create Date: 2026-12-01 17:34:39

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payoutacct0001"
down_revision: str | None = "mailtz0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payout_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("holder_name", sa.String(length=140), nullable=False),
        sa.Column("sealed_details", sa.Text(), nullable=False),
        sa.Column("masked", sa.String(length=40), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('sepa', 'us')", name=op.f("ck_payout_accounts_kind")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_payout_accounts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_accounts")),
        sa.UniqueConstraint("user_id", name=op.f("uq_payout_accounts_user_id")),
    )


def downgrade() -> None:
    op.drop_table("payout_accounts")

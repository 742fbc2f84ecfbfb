"""outbox tasks: the work to carry out after a commit (crowdfund/outbox.py)

Each row is written in the transaction that asks for the work, handed to
the task queue after commit, and swept on if a crash lost the hand-off.

Revision ID: outbox0001
Revises: transitions0001
Create Date: 2026-12-01 15:33:38

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outbox0001"
down_revision: str | None = "transitions0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("handed_at", sa.DateTime(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'done', 'failed')", name=op.f("ck_outbox_tasks_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_tasks")),
        sa.UniqueConstraint("key", name=op.f("uq_outbox_tasks_key")),
    )
    op.create_index("ix_outbox_tasks_status_next_attempt_at", "outbox_tasks", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_tasks_status_next_attempt_at", table_name="outbox_tasks")
    op.drop_table("outbox_tasks")

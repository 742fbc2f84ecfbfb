"""e-mail outbox: sent_emails becomes emails, with status, attempts, the message

Revision ID: mail0001
Revises: audit0001
Create Date: 2026-12-01 10:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "mail0001"
down_revision: str | None = "audit0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("to_address", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed')", name=op.f("ck_emails_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emails")),
        sa.UniqueConstraint("key", name=op.f("uq_emails_key")),
    )
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.create_index("ix_emails_status_next_attempt_at", ["status", "next_attempt_at"], unique=False)
    # Rows of the old table were handed to the mailer at commit: recorded as sent
    # (their keys keep a rerun of old steps from mailing again).
    op.execute("""
        INSERT INTO emails (key, to_address, subject, status, attempts, created_at, sent_at)
        SELECT key, to_address, subject, 'sent', 1, created_at, created_at FROM sent_emails ORDER BY id
    """)
    op.drop_table("sent_emails")


def downgrade() -> None:
    op.create_table(
        "sent_emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("to_address", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sent_emails")),
        sa.UniqueConstraint("key", name=op.f("uq_sent_emails_key")),
    )
    # Mail not yet sent is lost with the outbox (the old table could not hold it).
    op.execute("""
        INSERT INTO sent_emails (key, to_address, subject, created_at)
        SELECT key, to_address, subject, created_at FROM emails ORDER BY id
    """)
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_index("ix_emails_status_next_attempt_at")
    op.drop_table("emails")

"""box-office reports: the report a correction corrects

Revision ID: periods0001
Revises: payments0001
Create Date: 2026-12-01 10:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "periods0001"
down_revision: str | None = "payments0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("box_office_reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("corrects_report_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_box_office_reports_corrects_report_id_box_office_reports"),
            "box_office_reports",
            ["corrects_report_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("box_office_reports", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_box_office_reports_corrects_report_id_box_office_reports"), type_="foreignkey"
        )
        batch_op.drop_column("corrects_report_id")

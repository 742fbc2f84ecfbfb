"""one pending order per backer and film

A backer's new hold replaces their pending order of the film (issue 12,
item 14); a partial unique index refuses a second one made at the same
moment. Existing duplicates are resolved first the way a new hold would:
each backer keeps their newest pending order of a film, older ones expire
and give their units back to the position and the film's counter. An
expired order whose charge still succeeds is settled as a late charge
(funding.services.settle_success).

Revision ID: holds0001
Revises: periods0001
Create Date: 2026-12-01 10:00:00

"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "holds0001"
down_revision: str | None = "periods0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC).replace(tzinfo=None)
    duplicates = bind.execute(
        sa.text(
            "SELECT o.id, o.film_id, o.user_id, o.units FROM orders o "
            "WHERE o.status = 'pending' AND EXISTS (SELECT 1 FROM orders n WHERE n.status = 'pending' "
            "AND n.user_id = o.user_id AND n.film_id = o.film_id AND n.id > o.id) ORDER BY o.id"
        )
    ).all()
    for order_id, film_id, user_id, units in duplicates:
        bind.execute(
            sa.text("UPDATE orders SET status = 'expired', closed_at = :now WHERE id = :id").bindparams(
                sa.bindparam("now", type_=sa.DateTime())
            ),
            {"now": now, "id": order_id},
        )
        bind.execute(
            sa.text(
                "UPDATE backer_positions SET units = units - :units "
                "WHERE film_id = :film_id AND user_id = :user_id"
            ),
            {"units": units, "film_id": film_id, "user_id": user_id},
        )
        bind.execute(
            sa.text("UPDATE film_inventory SET held = held - :units WHERE film_id = :film_id"),
            {"units": units, "film_id": film_id},
        )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            "uq_orders_one_pending_per_film",
            ["user_id", "film_id"],
            unique=True,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_orders_one_pending_per_film",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )

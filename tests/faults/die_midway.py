"""A process that dies at the worst moment, for the fault tests.

    python -m tests.faults.die_midway CONFIG_JSON SCENARIO ARG

Scenarios:
- `after-charge ORDER_ID SETUP_INTENT`: pay the order; die (os._exit) the
  moment the app tries to record the successful charge, before the commit.
- `close-rounds N WHEN`: run the round close at WHEN (ISO time); die at the
  N-th ledger entry, here while recording a refund Stripe has already made.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event

from crowdfund.app import create_app
from crowdfund.site.web import app_services


def die_on(engine: Any, needle: str, nth: int = 1) -> None:
    seen = {"count": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def _maybe_die(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if needle in statement:
            seen["count"] += 1
            if seen["count"] >= nth:
                os._exit(17)  # no cleanup, no rollback message: the process is gone


def main() -> None:
    config, scenario = json.loads(sys.argv[1]), sys.argv[2]
    app = create_app("testing", config)
    engine = app_services(app).engine
    gateway = app_services(app).gateway
    now = datetime.now(UTC)
    with app_services(app).sessions() as session:
        if scenario == "after-charge":
            from crowdfund.funding.models import Order
            from crowdfund.workflows.checkout import pay_order

            order = session.get(Order, int(sys.argv[3]))
            # The order's move to paid is the first write after Stripe's answer.
            die_on(engine, "SET status=")
            pay_order(session, order, sys.argv[4], gateway, now=now)
        elif scenario == "close-rounds":
            from crowdfund.workflows.round_close import close_rounds

            die_on(engine, "INSERT INTO journal_entries", nth=int(sys.argv[3]))
            close_rounds(
                session,
                gateway,
                now=datetime.fromisoformat(sys.argv[4]),
                hold_window=timedelta(minutes=15),
                fee_bps=500,
            )
    sys.exit(0)  # reaching here means the fault never fired


if __name__ == "__main__":
    main()

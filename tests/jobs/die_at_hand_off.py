"""A process that dies between the commit of an outbox row and its hand-off
to the queue, for tests/jobs/test_crash_safety.py:

    python -m tests.jobs.die_at_hand_off CONFIG_JSON ORDER_REFERENCE

The order's backer cancels it (the refund's outbox row commits with the
cancellation); the process dies (os._exit) the moment it hands the row on.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime

from sqlalchemy import select

from crowdfund.app import create_app
from crowdfund.funding.models import Order
from crowdfund.site.web import app_services
from crowdfund.workflows.reactions import cancel_order


def die(task_id: int, countdown: float) -> None:
    os._exit(17)  # no cleanup: the row is committed, the queue never hears of it


def main() -> None:
    config, reference = json.loads(sys.argv[1]), sys.argv[2]
    app = create_app("testing", config)
    services = app_services(app)
    services.handoff.send_task = die
    with app.app_context(), services.sessions() as session:
        order = session.scalar(select(Order).where(Order.reference == reference))
        assert order is not None
        cancel_order(session, order, order.user, now=datetime.now(UTC))
        session.commit()
    sys.exit("the hand-off never happened")


if __name__ == "__main__":
    main()

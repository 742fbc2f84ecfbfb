"""The Celery app a bench worker process runs (`celery -A bench.worker_app worker`), bench only.

The app as production builds it (`create_app("production")`), with the
settings of the bench's run on top, passed as JSON in BENCH_WORKER_CONFIG
(database, localstripe, broker, queue, mail to nowhere; bench/close_workers.py).
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from crowdfund.app import create_app  # noqa: E402
from crowdfund.worker import make_celery  # noqa: E402

flask_app = create_app("production", json.loads(os.environ["BENCH_WORKER_CONFIG"]))
celery = make_celery(flask_app)

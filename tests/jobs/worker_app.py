"""The Celery app a test's real worker process runs (`celery -A tests.jobs.worker_app worker`):
the test app's settings come in TEST_WORKER_CONFIG (JSON), as tests/faults/die_midway.py does."""

import json
import os

from crowdfund.app import create_app
from crowdfund.worker import make_celery

flask_app = create_app("testing", json.loads(os.environ["TEST_WORKER_CONFIG"]))
celery = make_celery(flask_app)

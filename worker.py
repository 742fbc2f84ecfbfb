"""The Celery entry point: `celery -A worker worker` and `celery -A worker beat`
(configuration from the environment, as for wsgi.py; see docs/operations.md)."""

from crowdfund.app import create_app
from crowdfund.worker import make_celery

flask_app = create_app()
celery = make_celery(flask_app)

"""WSGI entry point: `gunicorn wsgi:app`. Committed outbox rows are handed to
the Celery broker from here; workers (`celery -A worker worker`) carry them out."""

from crowdfund.app import create_app
from crowdfund.worker import make_celery

app = create_app()
make_celery(app)

"""WSGI entry point: `gunicorn wsgi:app`."""

from crowdfund.app import create_app

app = create_app()

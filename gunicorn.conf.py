"""gunicorn settings (`gunicorn wsgi:app` reads this file from the working directory).

Measured with bench/launch.py on 2 cores (see README, Performance): a request
is Python CPU bound (the database answers in well under a millisecond), so a
few sync workers, one database connection each, serve the most holds per
second with the shortest tail. Threads and more processes than cores only add
switching and GIL contention. Every value can be overridden from the
environment or the command line.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# Queued connections wait in the kernel's backlog, not in Python.
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))

"""gunicorn settings (`gunicorn wsgi:app` reads this file from the working directory).

Measured with bench/launch.py on 2 cores (see bench/README.md): a hold is
mostly Python CPU, but a sync worker also waits on PostgreSQL for each of its
round trips (about half its wall time under load), so two workers per core keep
the cores busy: 4 workers served 431-490 holds/s with p99 165-177 ms where 3
served 436-445 with p99 204-214, in runs one after the other on 2026-11-29
(2 workers left the machine 22% idle; 6 only added switching). Threads add GIL contention to CPU-bound requests. Every
value can be overridden from the environment or the command line.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# Queued connections wait in the kernel's backlog, not in Python.
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))

"""Where the CPU of one hold request goes, in process. Run by hand, never in `make test`.

    .venv/bin/python bench/profile_hold.py [--holds 2000] [--top 30] [--bare]

Builds a fresh PostgreSQL database (as bench/launch.py does), logs one fan in
through Flask's test client with the real CSRF flow, then sends N hold POSTs
to the production app (`bench/launch_apps.py`'s `real`) and prints:

- microseconds of CPU per hold for the whole request (WSGI app only; the test
  client's own work is measured apart and subtracted), against the bare
  Flask + SQLAlchemy hold endpoint measured the same way in the same run;
- a cProfile of the app's requests, sorted by cumulative and by own time.

The figures are CPU time of this one process (time.process_time), so they
do not move with the load of the machine the way wall-clock rates do.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import DEFAULT_URL, create_database, drop_database  # noqa: E402
from bench.launch import CSRF_RE, PASSWORD, fill, reset_holds  # noqa: E402
from crowdfund.site.web import app_services  # noqa: E402


def wsgi_call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"], captured["headers"] = status, headers

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


def post_environ(path: str, form: str, cookie: str) -> dict[str, Any]:
    data = form.encode()
    return {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(data)),
        "HTTP_COOKIE": cookie, "HTTP_USER_AGENT": "bench", "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.input": io.BytesIO(data), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holds", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-profile", action="store_true", help="timings only")
    args = parser.parse_args()

    base_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    url = create_database(base_url, "crowdfund_profile")
    try:
        films = fill(url, fans=2, cap=10**7, limit=10**6, sellout_cap=10, sellout_limit=1)
        os.environ.update({"DATABASE_URL": url, "DATABASE_POOL_SIZE": "1",
                           "BENCH_BARE_FILM_ID": str(films.bare), "BENCH_BARE_LIMIT": str(10**6)})
        from bench import launch_apps

        # The app bench/launch.py serves (launch_apps.real), its settings given here
        # since config.py reads the environment at import.
        real = launch_apps.real_app({"SECRET_KEY": "profile-secret-key", "DATABASE_URL": url,
                                     "DATABASE_POOL_SIZE": 1, "PASSWORD_TIME_COST": 1,
                                     "PASSWORD_MEMORY_COST_KIB": 8192, "MAIL_BACKEND": "console"})
        bare = launch_apps.bare_app()

        client = real.test_client()
        # The same User-Agent as the measured requests: sessions are bound to it (strong protection).
        client.environ_base["HTTP_USER_AGENT"] = "bench"
        page = client.get("/login").get_data(as_text=True)
        token = CSRF_RE.search(page).group(1)  # type: ignore[union-attr]
        response = client.post("/login", data={"email": "fan1@bench.test", "password": PASSWORD,
                                               "csrf_token": token})
        assert response.status_code in (302, 303), response.status_code
        page = client.get("/films/launch-day").get_data(as_text=True)
        csrf = CSRF_RE.search(page).group(1)  # type: ignore[union-attr]
        cookie = "; ".join(f"{c.key}={c.value}" for c in client._cookies.values())

        def real_environ() -> dict[str, Any]:
            return post_environ("/films/launch-day/hold", f"csrf_token={csrf}&units=1&key={uuid.uuid4().hex}", cookie)

        def bare_environ() -> dict[str, Any]:
            return post_environ("/hold", f"user_id=1&key={uuid.uuid4().hex}", "")

        from sqlalchemy import create_engine

        resetter = create_engine(url)

        def run(app: Any, make_environ: Any, n: int, expect: str) -> float:
            # One fan holds again and again; a fan's second pending hold of a film
            # would take the replace path, so each hold's order is expired (outside
            # the measured CPU) before the next: every measured hold is a first one.
            environs = [make_environ() for _ in range(n)]
            spent = 0.0
            for environ in environs:
                start = time.process_time()
                status, headers, _ = wsgi_call(app, environ)
                spent += time.process_time() - start
                if not status.startswith("303") or expect not in dict(headers).get("Location", ""):
                    raise RuntimeError(f"hold answered {status} {dict(headers).get('Location')}")
                reset_holds(url, [films.launch, films.bare], resetter)
            return spent / n * 1e6

        status, headers, _ = wsgi_call(real.wsgi_app, real_environ())
        print("a hold answers", status, "with headers", [name for name, _ in headers])
        reset_holds(url, [films.launch, films.bare], resetter)
        # Warm both (imports, prepared statements, template caches), then measure.
        run(real.wsgi_app, real_environ, 200, "/checkout")
        run(bare.wsgi_app, bare_environ, 200, "/orders/")
        real_us = min(run(real.wsgi_app, real_environ, args.holds, "/checkout") for _ in range(3))
        bare_us = min(run(bare.wsgi_app, bare_environ, args.holds, "/orders/") for _ in range(3))
        print(f"CPU per hold request, in process (best of 3 x {args.holds}):")
        print(f"  app  {real_us:8.0f} us")
        print(f"  bare {bare_us:8.0f} us   app/bare = {real_us / bare_us:.2f}x "
              f"(bare is {bare_us / real_us:.0%} of the app's cost)")
        if not args.no_profile:
            profiler = cProfile.Profile(time.process_time)  # CPU, not time spent waiting on PostgreSQL
            environs = [real_environ() for _ in range(args.holds)]
            for environ in environs:
                profiler.enable()
                wsgi_call(real.wsgi_app, environ)
                profiler.disable()
                reset_holds(url, [films.launch, films.bare], resetter)
            for order in ("cumulative", "tottime"):
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order)
                stats.print_stats(args.top)
                print(re.sub(r"\n\s*\n", "\n", out.getvalue()))
        app_services(real).engine.dispose()
        resetter.dispose()
    finally:
        drop_database(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

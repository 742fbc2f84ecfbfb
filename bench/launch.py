"""Launch day: a flash sale through the whole stack, on PostgreSQL. Run by hand, never in `make test`.

    .venv/bin/python bench/launch.py [--buyers 64] [--fans 256] [--cap 1000000] [--seconds 5] [--rounds 3]

Builds a fresh database (next to BENCH_DATABASE_URL, default the local
PostgreSQL), migrates it, creates a film with a cap of C stakes and N fans,
starts the app under gunicorn (gunicorn.conf.py) on 127.0.0.1, logs every fan
in over HTTP (real session cookie, CSRF token from the film page) and fires M
concurrent buyers at POST /films/<slug>/hold, each hold with a fresh
idempotency key, for a bounded time and number of requests. Then, in the same
run and printout, the limits it is measured against:

  (a) the raw database limit: the same hold statement sent straight to
      PostgreSQL by M clients (pgbench; psycopg threads if pgbench is missing),
      and one counter row against 16 bucket rows (bench-local tables);
  (b) the framework limit: a bare Flask + SQLAlchemy endpoint running only
      that transaction under the same gunicorn settings, its rounds
      alternating with the app's (--rounds) so that a drifting machine moves
      both alike; for each, the CPU per hold of the workers, PostgreSQL and
      this load generator (from /proc);

and the catalogue and film page under the same load against a bare Flask
"hello", a sell-out (cap, per-backer limit, "Sold out" on the page within a
second) and the database checks: sold + held <= cap, no backer above the
limit, positions and counters equal to the orders, ledger balanced.
Prints figures and ratios; asserts nothing about time. Exit status 1 if any
stake was oversold or a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import BENCH_PAYOUT_KEY, DEFAULT_URL, create_database, drop_database  # noqa: E402

import aiohttp
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

HOST = "127.0.0.1"
PASSWORD = "bench-password-1"
CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
KEY_RE = re.compile(r'name="key"[^>]*value="([^"]+)"')


# --- database ---------------------------------------------------------------------------


@dataclass
class Films:
    launch: int
    sellout: int
    bare: int
    raw: int
    raw16: int


def fill(url: str, fans: int, cap: int, limit: int, sellout_cap: int, sellout_limit: int) -> Films:
    from crowdfund.accounts.passwords import hash_password, make_hasher
    from crowdfund.migrate import upgrade

    upgrade(url)
    # Cheap argon2 parameters (the server is started with the same ones): logging
    # 256 fans in is set-up, not what is measured.
    password_hash = hash_password(make_hasher(1, 8192), PASSWORD)
    engine = create_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO users (email, display_name, password_hash, session_version, is_active, created_at,
                               email_verified_at)
            SELECT 'fan' || g || '@bench.test', 'Fan ' || g, :hash, 1, true, :now, :now FROM generate_series(1, :n) g
        """), {"now": now, "n": fans, "hash": password_hash})
        conn.execute(text("INSERT INTO user_roles (user_id, role, granted_at) SELECT id, 'fan', :now FROM users"),
                     {"now": now})
        conn.execute(text("INSERT INTO studios (name, created_at) VALUES ('Bench Studio', :now)"), {"now": now})
        films = [("Launch Day", "funding", cap, limit), ("Sellout", "funding", sellout_cap, sellout_limit)]
        films += [(f"Also Funding {i}", "funding", 1000, 10) for i in range(1, 11)]
        # Films for the raw and bare limits, reached without the app; open for
        # funding, since the hold statement checks that.
        films += [("Bare Limit", "funding", 10**9, 10**6), ("Raw Limit", "funding", 10**9, 10**6),
                  ("Raw Sixteen", "funding", 10**9, 10**6)]
        for title, state, film_cap, film_limit in films:
            film_id = conn.execute(text("""
                INSERT INTO films (studio_id, slug, title, logline, synopsis, risks, funding_goal_cents,
                    stake_price_cents, stake_cap, per_backer_limit, deadline, timezone, expected_release_date,
                    recoup_share_bps, recoup_multiple_bps, profit_share_bps, state, created_at, updated_at,
                    opened_at)
                VALUES ((SELECT id FROM studios LIMIT 1), :slug, :title, 'A film fans fund on launch day.',
                    'A synopsis.', '', 100000, 5000, :cap, :limit, :deadline, 'UTC', :release, 5000, 12000,
                    1000, :state, :now, :now, :now)
                RETURNING id"""), {"slug": title.lower().replace(" ", "-"), "title": title, "now": now,
                                   "cap": film_cap, "limit": film_limit, "state": state,
                                   "deadline": now + timedelta(days=30),
                                   "release": (now + timedelta(days=365)).date()}).scalar_one()
            conn.execute(text("INSERT INTO film_inventory (film_id, cap, sold, held) VALUES (:f, :cap, 0, 0)"),
                         {"f": film_id, "cap": film_cap})
            ids[title] = film_id
    with engine.connect() as conn:
        # Statistics for what was filled only. ANALYZE of the still empty orders
        # and backer_positions records them as empty (0 rows, 0 pages), and a
        # backend that prepares the hold statement then caches a generic plan
        # that scans them sequentially, slower with every order, until
        # autovacuum analyzes them again (a fall of a third within 15 s, seen
        # 2026-11-29). Left unanalyzed, as on a freshly migrated production
        # database, they are planned with their indexes.
        conn.execute(text("ANALYZE users, user_roles, studios, films, film_inventory"))
    engine.dispose()
    return Films(ids["Launch Day"], ids["Sellout"], ids["Bare Limit"], ids["Raw Limit"], ids["Raw Sixteen"])


# --- gunicorn -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds each process has used so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return used


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two snapshots. A process that exited in between (an
    autovacuum worker) is left out: slightly under, never negative."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass
class CpuSplit:
    """Where the machine's CPU went during a phase, per successful request."""

    workers_ms: float
    postgres_ms: float
    client_ms: float

    def line(self) -> str:
        return (f"CPU per request: gunicorn workers {self.workers_ms:.2f} ms, PostgreSQL {self.postgres_ms:.2f} ms, "
                f"load generator {self.client_ms:.2f} ms")


async def measured_with_cpu(label: str, server: Server, request: Request, args: argparse.Namespace,
                            unit: str) -> tuple[Result, CpuSplit]:
    """`measured`, and the CPU used during the measured part split between the
    server's workers, PostgreSQL (all its processes: the bench is its only
    load) and this load generator, per successful request."""
    await load("warm-up", request, args.buyers, args.warmup, args.max_requests)
    workers = server.worker_pids()
    workers_before, postgres_before, client_before = cpu_seconds(workers), cpu_seconds(postgres_pids()), \
        time.process_time()
    result = await load(label, request, args.buyers, args.seconds, args.max_requests)
    spent = (cpu_spent(workers_before, cpu_seconds(workers)), cpu_spent(postgres_before, cpu_seconds(postgres_pids())),
             time.process_time() - client_before)
    split = CpuSplit(*(seconds * 1000 / max(1, result.ok) for seconds in spent))
    print("  " + result.line(unit), flush=True)
    print("    " + split.line(), flush=True)
    return result, split


def start_gunicorn(which: str, env: dict[str, str], args: argparse.Namespace, logdir: Path) -> Server:
    port = free_port()
    log = logdir / f"gunicorn-{which}.log"
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"{HOST}:{port}",
               "--error-logfile", str(log)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    if args.worker_class:
        command += ["--worker-class", args.worker_class]
    if args.threads:
        command += ["--threads", str(args.threads)]
    command.append("bench.launch_apps:app")
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env, "BENCH_APP": which,
                                                       "PYTHONPATH": str(ROOT)})
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn ({which}) exited; see {log}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError(f"gunicorn ({which}) did not listen within 60 s")
    return Server(process, url, log)


# --- HTTP load ----------------------------------------------------------------------------


@dataclass
class Fan:
    user_id: int
    email: str
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""

    def header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def keep(self, response: aiohttp.ClientResponse) -> None:
        for name, morsel in response.cookies.items():
            self.cookies[name] = morsel.value


@dataclass
class Result:
    label: str
    seconds: float
    kinds: Counter[str]
    latencies: list[float]
    ok_times: list[float]
    #: Share of one core the load generator itself used (it runs on the same machine).
    client_cpu: float = 0.0
    #: Share of all cores busy (everything on the machine), from /proc/stat.
    machine_busy: float = float("nan")

    @property
    def ok(self) -> int:
        return len(self.ok_times)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self, unit: str = "req/s") -> str:
        errors = {k: v for k, v in self.kinds.items() if k != "ok"}
        return (f"{self.label}: {self.rate:,.0f} {unit} ({self.ok:,} in {self.seconds:.1f} s); latency p50 "
                f"{self.pct(0.50):.0f} ms, p95 {self.pct(0.95):.0f} ms, p99 {self.pct(0.99):.0f} ms; "
                f"errors: {dict(errors) if errors else 'none'}; client CPU {self.client_cpu:.0%} of a core; "
                f"machine CPU {self.machine_busy:.0%} busy")


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores so far (Linux /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def combined(label: str, results: list[Result]) -> Result:
    """Several rounds of one phase as one result (rates over their total time)."""
    seconds = sum(r.seconds for r in results)
    kinds: Counter[str] = Counter()
    for r in results:
        kinds.update(r.kinds)
    return Result(label, seconds, kinds, [x for r in results for x in r.latencies],
                  [x for r in results for x in r.ok_times],
                  sum(r.client_cpu * r.seconds for r in results) / seconds,
                  sum(r.machine_busy * r.seconds for r in results) / seconds)


Request = Callable[[aiohttp.ClientSession, int], Awaitable[str]]


async def load(label: str, request: Request, concurrency: int, seconds: float, max_requests: int,
               stop: Callable[[], bool] = lambda: False) -> Result:
    """`concurrency` clients, each sending one request after another, until
    `seconds` have passed, `max_requests` were sent, or `stop()`."""
    kinds: Counter[str] = Counter()
    latencies: list[float] = []
    ok_times: list[float] = []
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=timeout) as http:
        began = time.perf_counter()
        cpu_began = time.process_time()
        ticks_began = cpu_ticks()
        deadline = began + seconds

        async def client(index: int) -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests and not stop():
                sent += 1
                start = time.perf_counter()
                try:
                    kind = await request(http, index)
                except TimeoutError:
                    kind = "timeout"
                except aiohttp.ClientError as exc:
                    kind = type(exc).__name__
                end = time.perf_counter()
                latencies.append(end - start)
                kinds[kind] += 1
                if kind == "ok":
                    ok_times.append(end)

        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
        client_cpu = (time.process_time() - cpu_began) / elapsed
        ticks_ended = cpu_ticks()
        total = ticks_ended[1] - ticks_began[1]
        machine_busy = (ticks_ended[0] - ticks_began[0]) / total if total else float("nan")
    return Result(label, elapsed, kinds, latencies, ok_times, client_cpu, machine_busy)


def classify(status: int, location: str, ok_location: str | None) -> str:
    if status == 303 and ok_location is not None:
        return "ok" if ok_location in location else "refused (sold out or limit)"
    if status == 200 and ok_location is None:
        return "ok"
    return f"HTTP {status}"


async def log_in(base: str, fans: list[Fan], slug: str) -> None:
    """Each fan logs in over HTTP and opens the film page: session cookie and CSRF token."""
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as http:
        gate = asyncio.Semaphore(16)

        async def one(fan: Fan) -> None:
            async with gate:
                async with http.get(f"{base}/login", headers=fan.header()) as r:
                    fan.keep(r)
                    token = CSRF_RE.search(await r.text())
                assert token, "no CSRF token on /login"
                form = {"email": fan.email, "password": PASSWORD, "csrf_token": token.group(1)}
                async with http.post(f"{base}/login", data=form, headers=fan.header(), allow_redirects=False) as r:
                    fan.keep(r)
                    if r.status not in (302, 303):
                        raise RuntimeError(f"login of {fan.email} answered {r.status}")
                async with http.get(f"{base}/films/{slug}", headers=fan.header()) as r:
                    fan.keep(r)
                    page = await r.text()
                csrf, key = CSRF_RE.search(page), KEY_RE.search(page)
                if not csrf or not key:
                    raise RuntimeError(f"film page for {fan.email} has no buy form")
                fan.csrf = csrf.group(1)

        await asyncio.gather(*(one(f) for f in fans))


def hold_request(base: str, slug: str, fans: list[Fan], concurrency: int) -> Request:
    # Each fan holds once (the launch-day shape): a fan's second hold of a film
    # would replace the first (one pending order per fan and film), the rare
    # path. Rounds are bounded to len(fans) requests and holds are reset between
    # them (reset_holds), so no two buyers share a session at once.
    taken = itertools.count()

    async def send(http: aiohttp.ClientSession, index: int) -> str:
        fan = fans[next(taken) % len(fans)]
        # A fresh key per hold: each POST is a new form submission.
        form = {"csrf_token": fan.csrf, "key": uuid.uuid4().hex, "units": "1"}
        async with http.post(f"{base}/films/{slug}/hold", data=form, headers=fan.header(),
                             allow_redirects=False) as r:
            await r.read()
            fan.keep(r)
            return classify(r.status, r.headers.get("Location", ""), "/checkout")

    return send


def bare_hold_request(base: str, fans: list[Fan]) -> Request:
    taken = itertools.count()  # each fan once, as hold_request

    async def send(http: aiohttp.ClientSession, index: int) -> str:
        fan = fans[next(taken) % len(fans)]
        async with http.post(f"{base}/hold", data={"user_id": str(fan.user_id), "key": uuid.uuid4().hex},
                             allow_redirects=False) as r:
            await r.read()
            return classify(r.status, r.headers.get("Location", ""), "/orders/")

    return send


def get_request(url: str, fans: list[Fan] | None = None, must_contain: str | None = None) -> Request:
    async def send(http: aiohttp.ClientSession, index: int) -> str:
        headers = fans[index % len(fans)].header() if fans else {}
        async with http.get(url, headers=headers, allow_redirects=False) as r:
            body = await r.text()
            if r.status == 200 and must_contain and must_contain not in body:
                return "wrong page"
            return classify(r.status, "", None)

    return send


async def measured(label: str, request: Request, args: argparse.Namespace, unit: str = "req/s",
                   seconds: float | None = None) -> Result:
    await load("warm-up", request, args.buyers, args.warmup, args.max_requests)
    result = await load(label, request, args.buyers, seconds or args.seconds, args.max_requests)
    print("  " + result.line(unit), flush=True)
    return result


async def sellout(base: str, slug: str, fans: list[Fan], args: argparse.Namespace) -> tuple[Result, float | None]:
    """M buyers until the film is sold out, while a visitor reloads its page
    every 100 ms: how long after the last hold does the page say "Sold out"?"""
    state = {"last_commit": 0.0, "seen": None, "refused_streak": 0}
    send = hold_request(base, slug, fans, args.buyers)

    async def tracked(http: aiohttp.ClientSession, index: int) -> str:
        kind = await send(http, index)
        if kind == "ok":
            state["last_commit"] = time.perf_counter()
            state["refused_streak"] = 0
        elif kind.startswith("refused"):
            state["refused_streak"] += 1
        return kind

    done = asyncio.Event()

    async def visitor() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            while not done.is_set():
                async with http.get(f"{base}/films/{slug}") as r:
                    page = await r.text()
                if "Sold out" in page and state["seen"] is None:
                    state["seen"] = time.perf_counter()
                await asyncio.sleep(0.1)

    watcher = asyncio.create_task(visitor())
    # Stop once every buyer has been refused many times in a row: sold out.
    result = await load("sell-out", tracked, args.buyers, 60, 200_000,
                        stop=lambda: state["refused_streak"] > 4 * args.buyers)
    await asyncio.sleep(1.2)
    done.set()
    await watcher
    delay = None
    if state["seen"] is not None:
        delay = max(0.0, state["seen"] - state["last_commit"])
    return result, delay


# --- raw database limit ------------------------------------------------------------------------


def pgbench_script(bucket_table: bool) -> str:
    from crowdfund.funding.hold_statement import HOLD_STATEMENT_PG

    sql = HOLD_STATEMENT_PG
    for name, expression in {
        ":reference": "'RS-' || upper(substr(md5(random()::text || clock_timestamp()::text), 1, 12))",
        ":idempotency_key": "md5(random()::text || clock_timestamp()::text)",
        ":created_at": "(now() AT TIME ZONE 'UTC')",
        ":expires_at": "(now() AT TIME ZONE 'UTC' + interval '15 minutes')",
    }.items():
        sql = sql.replace(name, expression)
    if bucket_table:
        sql = sql.replace("UPDATE film_inventory SET held = held + :units\n    WHERE film_id = :film_id AND",
                          "UPDATE bench_buckets SET held = held + :units\n    WHERE film_id = :film_id "
                          "AND bucket = :bucket AND")
        assert "bench_buckets" in sql
    header = ("\\set user_id 1 + :client_id + :clients * random(0, :fans / :clients - 1)\n\\set units 1\n\\set unit_price_cents 5000\n"
              "\\set amount_cents 5000\n\\set bucket random(1, :buckets)\n")
    return header + sql.strip() + ";\n"


def run_pgbench(url: str, script: str, clients: int, seconds: int, variables: dict[str, int]) -> tuple[float, float]:
    target = make_url(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    command = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds),
               "-h", target.host or HOST, "-p", str(target.port or 5432), "-U", target.username or "postgres",
               "-f", handle.name]
    for name, value in variables.items():
        command += ["-D", f"{name}={value}"]
    command.append(target.database or "postgres")
    env = {**os.environ}
    if target.password:
        env["PGPASSWORD"] = target.password
    output = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False)
    os.unlink(handle.name)
    if output.returncode != 0:
        raise RuntimeError(f"pgbench failed: {output.stderr[-2000:]}")
    tps = float(re.search(r"tps = ([\d.]+)", output.stdout).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", output.stdout).group(1))  # type: ignore[union-attr]
    return tps, latency


def run_psycopg(url: str, script: str, clients: int, seconds: int, variables: dict[str, int]) -> tuple[float, float]:
    """The same as pgbench, from Python threads (when pgbench is not installed)."""
    import random

    import psycopg

    lines = script.splitlines()
    sql = "\n".join(line for line in lines if not line.startswith("\\set"))
    sql = re.sub(r":(\w+)", r"%(\1)s", sql.rstrip().rstrip(";"))
    target = make_url(url).set(drivername="postgresql")
    dsn = target.render_as_string(hide_password=False)
    count, total = [0], [0.0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(client_id: int) -> None:
        with psycopg.connect(dsn) as conn:
            while time.monotonic() < deadline:
                per_client = variables["fans"] // clients
                user_id = 1 + client_id + clients * random.randint(0, per_client - 1)
                params = {**variables, "user_id": user_id, "units": 1,
                          "unit_price_cents": 5000, "amount_cents": 5000,
                          "bucket": random.randint(1, variables["buckets"])}
                start = time.perf_counter()
                conn.execute(sql, params)
                conn.commit()
                with lock:
                    count[0] += 1
                    total[0] += time.perf_counter() - start

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count[0] / (time.monotonic() - began), total[0] / max(count[0], 1) * 1000


def raw_limit(url: str, clients: int, seconds: int, film_id: int, fans: int, buckets: int | None) -> tuple[float, float]:
    # Each client draws its fans from its own residue class (fan = client + 1 + k * clients): two
    # clients never hold for the same fan at once, which the one-pending-hold-per-fan unique index
    # would refuse with an error that aborts pgbench (the app turns that race into DuplicateRequest).
    variables = {"film_id": film_id, "fans": fans, "per_backer_limit": 10**6, "buckets": buckets or 1,
                 "clients": clients}
    script = pgbench_script(bucket_table=buckets is not None)
    runner = run_pgbench if shutil.which("pgbench") else run_psycopg
    return runner(url, script, clients, seconds, variables)


def raw_orders(url: str, film_ids: list[int]) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM orders WHERE film_id = ANY(:ids)"), {"ids": film_ids}).scalar_one()
    engine.dispose()
    return int(count)


def reset_holds(url: str, film_ids: list[int], engine: Any = None) -> None:
    """Bench set-up between hold phases: every pending order of these films
    expires and gives its units back, so each fan starts the next phase
    holding nothing (the app would release them the same way once lapsed)."""
    own_engine = engine is None
    engine = engine or create_engine(url)
    with engine.begin() as conn:
        pending = "SELECT film_id, user_id, sum(units) AS units FROM orders " \
                  "WHERE status = 'pending' AND film_id = ANY(:ids) GROUP BY film_id, user_id"
        conn.execute(text(f"UPDATE backer_positions bp SET units = bp.units - p.units FROM ({pending}) p "
                          "WHERE bp.film_id = p.film_id AND bp.user_id = p.user_id"), {"ids": film_ids})
        conn.execute(text(f"UPDATE film_inventory fi SET held = fi.held - p.units FROM "
                          f"(SELECT film_id, sum(units) AS units FROM ({pending}) q GROUP BY film_id) p "
                          "WHERE fi.film_id = p.film_id"), {"ids": film_ids})
        conn.execute(text("UPDATE orders SET status = 'expired', closed_at = now() AT TIME ZONE 'UTC' "
                          "WHERE status = 'pending' AND film_id = ANY(:ids)"), {"ids": film_ids})
    if own_engine:
        engine.dispose()


def prepare_buckets(url: str, films: Films) -> None:
    """Bench-local counters: the Raw Limit film as one bucket row, Raw Sixteen as 16."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("""CREATE TABLE bench_buckets (film_id integer, bucket integer, cap integer,
            sold integer NOT NULL DEFAULT 0, held integer NOT NULL DEFAULT 0, PRIMARY KEY (film_id, bucket),
            CHECK (sold >= 0 AND held >= 0 AND sold + held <= cap))"""))
        conn.execute(text("INSERT INTO bench_buckets (film_id, bucket, cap) VALUES (:f, 1, 1000000000)"),
                     {"f": films.raw})
        conn.execute(text("""INSERT INTO bench_buckets (film_id, bucket, cap)
                             SELECT :f, g, 62500000 FROM generate_series(1, 16) g"""), {"f": films.raw16})
    engine.dispose()


# --- checks ----------------------------------------------------------------------------------


def check_database(url: str, film_ids: dict[str, int]) -> list[str]:
    from crowdfund import ledger
    from crowdfund.db import make_engine, make_sessionmaker

    problems: list[str] = []
    engine = create_engine(url)
    with engine.connect() as conn:
        for label, film_id in film_ids.items():
            row = conn.execute(text("""
                SELECT i.cap, i.sold, i.held, f.per_backer_limit,
                  (SELECT coalesce(sum(units), 0) FROM orders o WHERE o.film_id = f.id AND o.status = 'pending'),
                  (SELECT coalesce(sum(units), 0) FROM orders o WHERE o.film_id = f.id AND o.status = 'paid'),
                  (SELECT coalesce(max(units), 0) FROM backer_positions p WHERE p.film_id = f.id),
                  (SELECT count(*) FROM backer_positions p WHERE p.film_id = f.id AND p.units <>
                     (SELECT coalesce(sum(units), 0) FROM orders o WHERE o.film_id = p.film_id
                      AND o.user_id = p.user_id AND o.status IN ('pending', 'paid'))),
                  (SELECT count(*) FROM orders o WHERE o.film_id = f.id)
                FROM films f JOIN film_inventory i ON i.film_id = f.id WHERE f.id = :f"""), {"f": film_id}).one()
            cap, sold, held, limit, pending, paid, top, mismatched, orders = row
            oversell = max(0, sold + held - cap, pending + paid - cap)
            print(f"  {label}: cap {cap:,}, sold {sold:,} + held {held:,} = {sold + held:,} "
                  f"(orders: {orders:,}, {pending + paid:,} stakes); oversell {oversell}; "
                  f"top backer {top} of limit {limit}; positions off: {mismatched}")
            if oversell:
                problems.append(f"{label}: OVERSOLD by {oversell}")
            if top > limit:
                problems.append(f"{label}: a backer holds {top}, above the limit {limit}")
            if held != pending or sold != paid:
                problems.append(f"{label}: counters (sold {sold}, held {held}) differ from orders "
                                f"(paid {paid}, pending {pending})")
            if mismatched:
                problems.append(f"{label}: {mismatched} backer positions differ from their orders")
    engine.dispose()
    app_engine = make_engine(url)
    with make_sessionmaker(app_engine)() as session:
        balance = ledger.trial_balance(session)
    app_engine.dispose()
    print(f"  ledger trial balance: {balance}")
    if balance != 0:
        problems.append(f"ledger unbalanced by {balance}")
    return problems


# --- main --------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.0%}" if b else "n/a"


async def hold_rounds(server: Server, bare: Server, fans: list[Fan], args: argparse.Namespace,
                      profile: Path | None, reset: Callable[[], None]) -> tuple[Result, Result, list[float]]:
    """The app's holds and the bare endpoint's, alternating for --rounds rounds,
    so that a machine whose speed drifts during the run (shared cores) moves
    both the same way; the ratio is taken over all rounds together."""
    print(f"logging {len(fans)} fans in over HTTP ...", flush=True)
    began = time.perf_counter()
    await log_in(server.url, fans, "launch-day")
    print(f"  done in {time.perf_counter() - began:.1f} s", flush=True)
    print(f"holds, {args.rounds} rounds of {args.seconds:g} s (or {args.max_requests:,} requests) each, "
          f"{args.buyers} buyers:\n  app: POST /films/launch-day/hold (session + CSRF + fresh key); "
          f"framework limit (b): bare Flask + SQLAlchemy POST /hold, same gunicorn settings", flush=True)
    spy = None
    if profile is not None:
        spy = start_py_spy(server, profile, args.warmup + args.seconds)
    app_rounds: list[Result] = []
    bare_rounds: list[Result] = []
    app_cpu: list[CpuSplit] = []
    bare_cpu: list[CpuSplit] = []
    # Each fan once per phase: warm-ups and rounds stop at len(fans) requests,
    # and every phase starts with no hold pending.
    bounded = argparse.Namespace(**{**vars(args), "warmup": 0, "max_requests": min(args.max_requests, len(fans))})

    async def warm(request: Request) -> None:
        await load("warm-up", request, args.buyers, args.warmup, bounded.max_requests)
        reset()

    for number in range(1, args.rounds + 1):
        await warm(hold_request(server.url, "launch-day", fans, args.buyers))
        result, split = await measured_with_cpu(f"round {number} app holds", server,
                                                hold_request(server.url, "launch-day", fans, args.buyers), bounded,
                                                "holds/s")
        reset()
        app_rounds.append(result)
        app_cpu.append(split)
        if spy is not None:
            spy.wait()
            spy = None
            print(f"  py-spy profile of the workers: {profile}")
        await warm(bare_hold_request(bare.url, fans))
        result, split = await measured_with_cpu(f"round {number} bare holds", bare, bare_hold_request(bare.url, fans),
                                                bounded, "holds/s")
        reset()
        bare_rounds.append(result)
        bare_cpu.append(split)
    ratios = [a.rate / b.rate for a, b in zip(app_rounds, bare_rounds) if b.rate]
    app, bare_all = combined("app holds, all rounds", app_rounds), combined("bare holds, all rounds", bare_rounds)
    print("  " + app.line("holds/s"))
    print("    " + mean_split(app_cpu, app_rounds).line())
    print("  " + bare_all.line("holds/s"))
    print("    " + mean_split(bare_cpu, bare_rounds).line())
    return app, bare_all, ratios


def mean_split(splits: list[CpuSplit], results: list[Result]) -> CpuSplit:
    """Per-request CPU over several rounds, weighted by their requests."""
    total = sum(r.ok for r in results) or 1
    return CpuSplit(*(sum(getattr(s, name) * r.ok for s, r in zip(splits, results)) / total
                      for name in ("workers_ms", "postgres_ms", "client_ms")))


async def page_phases(server: Server, bare: Server, fans: list[Fan], args: argparse.Namespace) -> dict[str, Any]:
    base = server.url
    out: dict[str, Any] = {}
    print("pages: GET, same concurrency", flush=True)
    out["catalogue"] = await measured("catalogue / (anonymous)", get_request(f"{base}/", None, "Launch Day"),
                                      args, seconds=args.page_seconds)
    out["film"] = await measured("film page (anonymous)", get_request(f"{base}/films/launch-day", None,
                                                                      "Launch Day"), args,
                                 seconds=args.page_seconds)
    out["film_fan"] = await measured("film page (logged-in fan)",
                                     get_request(f"{base}/films/launch-day", fans, "Continue to review"), args,
                                     seconds=args.page_seconds)
    out["hello"] = await measured("bare GET /hello", get_request(f"{bare.url}/hello"), args,
                                  seconds=args.page_seconds)
    print(f"sell-out: {args.buyers} buyers until 'Sellout' (cap {args.sellout_cap}, "
          f"{args.sellout_limit} per backer) is gone", flush=True)
    # Each buyer holds one stake once: enough fans to sell the cap out, no more logged in again.
    sellers = fans[:max(4 * args.sellout_cap, args.buyers)]
    await log_in(base, sellers, "sellout")
    result, delay = await sellout(base, "sellout", sellers, args)
    print("  " + result.line("holds/s"))
    print(f"  page says 'Sold out' {'%.0f ms' % (delay * 1000) if delay is not None else 'NEVER'} "
          f"after the last hold (reach: within 1 s)")
    out["sellout_delay"] = delay
    return out


def start_py_spy(server: Server, path: Path, seconds: float) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([py_spy, "record", "--format", {".json": "speedscope", ".txt": "raw"}.get(path.suffix, "flamegraph"),
                             "-o", str(path), "--duration", str(int(seconds)), "--subprocesses", "--nonblocking",
                             "--pid", str(server.process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=64, help="concurrent buyers (M)")
    parser.add_argument("--fans", type=int, default=4096, help="fans with sessions (N); each holds once per "
                        "round, so a round ends after N holds or --seconds")
    parser.add_argument("--cap", type=int, default=1_000_000, help="the launch film's cap of stakes (C)")
    parser.add_argument("--limit", type=int, default=100, help="the launch film's per-backer limit "
                        "(fans x limit must exceed what the buyers hold in all rounds)")
    parser.add_argument("--sellout-cap", type=int, default=300)
    parser.add_argument("--sellout-limit", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="measured seconds per hold round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of app holds and bare holds, alternating")
    parser.add_argument("--page-seconds", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--max-requests", type=int, default=50_000, help="bound per phase")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py)")
    parser.add_argument("--worker-class", help="gunicorn worker class (default: gunicorn.conf.py)")
    parser.add_argument("--threads", type=int, help="gunicorn threads per worker")
    parser.add_argument("--profile", type=Path, help="record a py-spy profile of the app's hold phase here "
                        "(.svg flamegraph, .json speedscope, .txt collapsed stacks)")
    parser.add_argument("--rate-limits", metavar="REDIS_URL", nargs="?", const="redis://127.0.0.1:6379/0",
                        help="run the app with its rate limiter on, in this Redis (limits set out of reach: "
                             "measures what the check costs)")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if args.fans < args.buyers:
        parser.error("--fans must be at least --buyers (one session per buyer at least)")
    base = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if make_url(base).host not in (None, "127.0.0.1", "localhost"):
        parser.error("the benchmark runs against 127.0.0.1 only")
    url = create_database(base, "bench_launch")
    logdir = Path(tempfile.mkdtemp(prefix="bench-launch-"))
    servers: list[Server] = []
    try:
        films = fill(url, args.fans, args.cap, args.limit, args.sellout_cap, args.sellout_limit)
        fans = [Fan(i, f"fan{i}@bench.test") for i in range(1, args.fans + 1)]
        env = {"CROWDFUND_ENV": "production", "SECRET_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
               "PAYOUT_DETAILS_KEYS": BENCH_PAYOUT_KEY,
               "DATABASE_URL": url, "PASSWORD_TIME_COST": "1", "PASSWORD_MEMORY_COST_KIB": "8192",
               "MAIL_BACKEND": "console", "BENCH_BARE_FILM_ID": str(films.bare),
               "BENCH_BARE_LIMIT": str(10**6)}
        if args.rate_limits:
            env.update({"BENCH_REDIS_URL": args.rate_limits, "BENCH_RATELIMIT_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"})
        probe = ("import runpy; c = runpy.run_path('gunicorn.conf.py'); "
                 "print(c['workers'], c['worker_class'], c['threads'])")
        conf = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.split()
        workers = args.workers or int(conf[0])
        worker_class = args.worker_class or conf[1]
        threads = args.threads or int(conf[2])
        print(f"database {make_url(url).database}; {os.cpu_count()} cores; gunicorn {workers} x {worker_class}"
              f"{f' ({threads} threads)' if worker_class == 'gthread' else ''}, "
              f"DATABASE_POOL_SIZE {os.environ.get('DATABASE_POOL_SIZE', '5 (default)')}; "
              f"{args.buyers} buyers, {args.fans} fans, cap {args.cap:,}; rate limits "
              f"{'on, in ' + args.rate_limits if args.rate_limits else 'off'}", flush=True)

        # Both servers stay up (idle workers cost nothing) so the hold phases can alternate.
        server = start_gunicorn("real", env, args, logdir)
        servers.append(server)
        bare_server = start_gunicorn("bare", env, args, logdir)
        servers.append(bare_server)
        holds, bare_holds, round_ratios = asyncio.run(hold_rounds(
            server, bare_server, fans, args, args.profile, lambda: reset_holds(url, [films.launch, films.bare])))
        app = asyncio.run(page_phases(server, bare_server, fans, args))
        server.stop()
        bare_server.stop()

        raw = raw16 = None
        if not args.skip_raw:
            prepare_buckets(url, films)
            tool = "pgbench" if shutil.which("pgbench") else "psycopg threads"
            print(f"raw database limit (a): the same hold statement, {args.buyers} clients ({tool})", flush=True)
            seconds = int(args.seconds)
            raw = raw_limit(url, args.buyers, seconds, films.raw, args.fans, None)
            print(f"  raw hold statement, film_inventory row: {raw[0]:,.0f} holds/s (latency avg {raw[1]:.1f} ms)")
            one = raw_limit(url, args.buyers, seconds, films.raw, args.fans, 1)
            raw16 = raw_limit(url, args.buyers, seconds, films.raw16, args.fans, 16)
            print(f"  one counter row vs 16 bucket rows ({args.buyers} raw clients): {one[0]:,.0f} vs "
                  f"{raw16[0]:,.0f} holds/s ({raw16[0] / one[0]:.2f}x)")
            raw_held = raw_orders(url, [films.raw, films.raw16])
            print(f"  orders the raw runs made: {raw_held:,} (pgbench counts transactions; a refused hold "
                  "is one too, so this must be about their sum)")

        print("database checks:")
        problems = check_database(url, {"Launch Day": films.launch, "Sellout": films.sellout,
                                        "Bare Limit": films.bare})

        print("\nsummary")
        print(f"  app holds/s {holds.rate:,.0f}; p50 {holds.pct(.5):.0f} ms, p95 {holds.pct(.95):.0f} ms, "
              f"p99 {holds.pct(.99):.0f} ms at {args.buyers} buyers")
        print(f"  vs framework limit (b) {bare_holds.rate:,.0f} holds/s: {ratio(holds.rate, bare_holds.rate)} "
              f"(reach >= 60%; rounds: {', '.join(f'{r:.0%}' for r in round_ratios)})")
        if raw is not None:
            print(f"  vs raw database limit (a) {raw[0]:,.0f} holds/s: {ratio(holds.rate, raw[0])}")
        print(f"  p99 {holds.pct(.99):.0f} ms (reach < 250 ms)")
        hello = app["hello"].rate
        for key, label in (("catalogue", "catalogue"), ("film", "film page (anonymous)"),
                           ("film_fan", "film page (fan)")):
            print(f"  {label} {app[key].rate:,.0f} req/s = {ratio(app[key].rate, hello)} of bare hello "
                  f"({hello:,.0f} req/s)")
        delay = app["sellout_delay"]
        print(f"  sold-out film shows 'Sold out' after {'%.0f ms' % (delay * 1000) if delay is not None else 'never'}")
        print(f"  oversell: {'0' if not any('OVERSOLD' in p for p in problems) else 'NONZERO'}; checks: "
              f"{'all passed' if not problems else '; '.join(problems)}")
        if delay is None or delay > 1.0:
            problems.append("sold-out film not shown as sold out within 1 s")
        return 1 if problems else 0
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            drop_database(url)
        shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

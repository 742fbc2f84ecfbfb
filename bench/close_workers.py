"""bench/close_rounds.py --workers: the round close on real Celery worker processes. Bench only.

`run_on_workers` starts W workers (`celery -A bench.worker_app worker --pool
solo`, one process each) on a queue of its own on the bench's Redis, sends
"jobs.close_rounds" once and times it until every order of the film is
refunded ("done"), polling the database. Then it sends "jobs.close_rounds"
and "outbox.sweep" again, which must do nothing, and reads each worker's
peak memory (VmHWM) before stopping them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.common import BENCH_PAYOUT_KEY
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
#: The broker: a Redis db of the bench's own (never flushed; only its queue's keys are deleted).
BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/7")
#: A finished task in a worker's log (-l info): when, which, how long, what it returned.
SUCCEEDED = re.compile(r"^\[([0-9-]+ [0-9:,]+): INFO/MainProcess\] Task (\S+)\[[^\]]+\] "
                       r"succeeded in ([0-9.e-]+)s: '(.*)'$", re.MULTILINE)


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def said(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def status(self) -> dict[str, int]:
        """VmHWM (peak resident set) and VmRSS in kB, from /proc while it runs."""
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
        return values

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@dataclass
class WorkersResult:
    workers: int
    #: Seconds from the send until every order was decided (refunded) / refunded at Stripe (done).
    decided_s: float = 0.0
    done_s: float = 0.0
    refunds: int = 0
    #: Per worker: VmHWM in MB at the end.
    peak_mb: list[float] = field(default_factory=list)
    #: CPU seconds over the timed part: workers (all), localstripe, this database's PostgreSQL backends.
    cpu: dict[str, float] = field(default_factory=dict)
    #: Share of the machine's cores busy (everything running, others' work too) over the timed part.
    machine_busy: float = 0.0
    #: Tasks the workers ran, by name (outbox rows by kind): (how many, seconds in all), over the whole run.
    tasks: dict[str, tuple[int, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.refunds / self.done_s if self.done_s else 0.0


def worker_config(url: str, api_base: str, secret_key: str, queue: str, batch_size: int) -> dict[str, Any]:
    return {
        "SECRET_KEY": "bench-" + uuid.uuid4().hex,
        "PAYOUT_DETAILS_KEYS": BENCH_PAYOUT_KEY,
        "DATABASE_URL": url,
        "DATABASE_POOL_RECYCLE_SECONDS": -1,
        "STRIPE_SECRET_KEY": secret_key,
        "STRIPE_API_BASE": api_base,
        "STRIPE_WEBHOOK_SECRET": "whsec_bench",
        "STRIPE_TIMEOUT_SECONDS": 60,
        # localstripe is no Stripe: measure the job, not the Stripe rate limit.
        "STRIPE_MAX_REQUESTS_PER_SECOND": 0,
        "CELERY_BROKER_URL": BROKER,
        "CELERY_QUEUE": queue,
        "REDIS_URL": "",
        "RATELIMIT_ENABLED": False,
        # E-mail is measured apart (it is I/O, not the job): delivered to nowhere, by mail.deliver tasks.
        "MAIL_BACKEND": "none",
        "MAIL_DELIVERY_THREAD": False,
        "REFUND_BATCH_SIZE": batch_size,
        # The final sweep hands on whatever is pending a second after its hand-off (it must find nothing).
        "OUTBOX_SWEEP_SECONDS": 1,
    }


def start_workers(count: int, config: dict[str, Any], logdir: Path) -> list[WorkerProcess]:
    started = []
    for index in range(count):
        log = logdir / f"worker-{config['CELERY_QUEUE']}-{index}.log"
        command = [sys.executable, "-m", "celery", "-A", "bench.worker_app", "worker", "--pool", "solo",
                   "-Q", config["CELERY_QUEUE"], "-n", f"bench{index}-{config['CELERY_QUEUE']}@%h",
                   "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"]
        with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the worker
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONPATH": str(ROOT),
                                            "BENCH_WORKER_CONFIG": json.dumps(config)})
        started.append(WorkerProcess(process, log))
    deadline = time.monotonic() + 90
    while not all(" ready." in w.said() for w in started):
        if time.monotonic() > deadline or any(w.process.poll() is not None for w in started):
            for w in started:
                w.stop()
            raise RuntimeError("workers did not start:\n" + "\n".join(w.said()[-3000:] for w in started))
        time.sleep(0.2)
    return started


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


def backends_of(database: str) -> list[int]:
    """PostgreSQL backends serving `database` (their title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and f" {database} " in title:
                pids.append(int(entry.name))
    return pids


def machine_ticks() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


def outbox_state(engine: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT kind, status, count(*), sum(attempts), count(last_error) FROM outbox_tasks GROUP BY 1, 2"
        )).all()
    return {f"{kind}/{status}": (count, attempts, errors) for kind, status, count, attempts, errors in rows}


@dataclass(frozen=True)
class TaskRun:
    at: str
    name: str
    seconds: float
    value: str


def tasks_run(workers: list[WorkerProcess]) -> list[TaskRun]:
    """Every task the workers finished, in the order they finished (from their logs)."""
    runs = [TaskRun(m.group(1), m.group(2), float(m.group(3)), m.group(4))
            for w in workers for m in SUCCEEDED.finditer(w.said())]
    return sorted(runs, key=lambda run: run.at)


def run_on_workers(url: str, api_base: str, secret_key: str, film_id: int, count: int, *, orders: int,
                   batch_size: int, timeout: float, localstripe_pid: int, logdir: Path,
                   stripe_sample: Callable[[], list[int]]) -> WorkersResult:
    from celery import Celery

    result = WorkersResult(count)
    queue = f"bench-{uuid.uuid4().hex[:10]}"
    client = Celery("bench-client", broker=BROKER, set_as_current=False)
    workers = start_workers(count, worker_config(url, api_base, secret_key, queue, batch_size), logdir)
    engine = create_engine(url)
    database = str(make_url(url).database)
    progress = text("SELECT count(*) FILTER (WHERE status = 'refunded'), count(*) FILTER (WHERE refund_state = "
                    "'done') FROM orders WHERE film_id = :f")
    try:
        pids = [w.process.pid for w in workers]
        cpu_before = cpu_seconds(pids), cpu_seconds([localstripe_pid]), cpu_seconds(backends_of(database))
        busy_before = machine_ticks()
        started = time.perf_counter()
        client.send_task("jobs.close_rounds", queue=queue)
        while True:
            with engine.connect() as conn:
                decided, done = conn.execute(progress, {"f": film_id}).one()
            now = time.perf_counter() - started
            if decided == orders and not result.decided_s:
                result.decided_s = now
            if done == orders:
                result.done_s, result.refunds = now, done
                break
            if now > timeout or any(w.process.poll() is not None for w in workers):
                result.problems.append(f"{count} worker(s): {done:,} of {orders:,} refunded after {now:.0f} s")
                result.done_s, result.refunds = now, done
                break
            time.sleep(0.25)
        busy_after = machine_ticks()
        result.cpu = {
            "workers": spent(cpu_before[0], cpu_seconds(pids)),
            "localstripe": spent(cpu_before[1], cpu_seconds([localstripe_pid])),
            "postgres": spent(cpu_before[2], cpu_seconds(backends_of(database))),
        }
        result.machine_busy = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
        if not result.problems:
            check_nothing_more(client, queue, workers, engine, result, stripe_sample)
        for run in tasks_run(workers):
            # An outbox row's kind is the first word of what outbox.run returns ("refunds.batch 5: done").
            name = run.value.split()[0] if run.name == "outbox.run" else run.name
            count, seconds = result.tasks.get(name, (0, 0.0))
            result.tasks[name] = (count + 1, seconds + run.seconds)
        result.peak_mb = [w.status()["VmHWM"] / 1024 for w in workers]
    finally:
        for w in workers:
            w.stop()
        engine.dispose()
        import redis

        broker = redis.Redis.from_url(BROKER)
        # The queue and kombu's bindings of it (_kombu.binding.<queue>, _kombu.binding_permanent.<queue>).
        broker.delete(queue, *broker.scan_iter(match=f"_kombu.binding*{queue}"))
        broker.close()
    if result.problems:
        for w in workers:
            print(f"--- {w.log} (last lines)\n{w.said()[-3000:]}", file=sys.stderr)
    return result


def wait_idle(engine: Any, seconds: float) -> bool:
    """Until no outbox row is pending or running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(key.endswith(("/pending", "/running")) for key in outbox_state(engine)):
            return True
        time.sleep(0.25)
    return False


def check_nothing_more(client: Any, queue: str, workers: list[WorkerProcess], engine: Any,
                       result: WorkersResult, stripe_sample: Callable[[], list[int]]) -> None:
    """A second close_rounds and a sweep, once all is done: nothing scheduled,
    no row run again, no refund more at localstripe (on a sample)."""
    if not wait_idle(engine, 120):
        result.problems.append(f"outbox rows still pending or running: {outbox_state(engine)}")
        return
    before, refunds_before = outbox_state(engine), stripe_sample()
    closes = len([t for t in tasks_run(workers) if t.name == "jobs.close_rounds"])
    sweeps = len([t for t in tasks_run(workers) if t.name == "outbox.sweep"])
    client.send_task("jobs.close_rounds", queue=queue)
    client.send_task("outbox.sweep", queue=queue)
    deadline = time.monotonic() + 120
    while True:
        ran = tasks_run(workers)
        again = [t.value for t in ran if t.name == "jobs.close_rounds"][closes:]
        swept = [t.value for t in ran if t.name == "outbox.sweep"][sweeps:]
        if again and swept:
            break
        if time.monotonic() > deadline:
            result.problems.append("the second close_rounds or the sweep did not finish in 120 s")
            return
        time.sleep(0.25)
    wait_idle(engine, 60)
    after, refunds_after = outbox_state(engine), stripe_sample()
    print(f"  second close_rounds: {again[0]}; sweep: {swept[0]} (both must be scheduled=0); "
          f"outbox rows unchanged: {after == before}; refunds at localstripe on a sample of "
          f"{len(refunds_after)}: {sum(refunds_before)} before, {sum(refunds_after)} after")
    if refunds_after != refunds_before:
        result.problems.append("the second run made refunds at localstripe")
    if again[0] != "FanOutReport(scheduled=0)" or swept[0] != "FanOutReport(scheduled=0)":
        result.problems.append(f"the second run scheduled work: close_rounds {again[0]}, sweep {swept[0]}")
    if after != before:
        result.problems.append(f"outbox rows changed after the second run: {before} -> {after}")
    if any(errors or not key.endswith("/done") for key, (_rows, _attempts, errors) in after.items()):
        result.problems.append(f"an outbox row failed or is not done: {after}")
    rerun = {key: attempts - rows for key, (rows, attempts, _errors) in after.items() if attempts != rows}
    if rerun:  # a lapsed lease or a redelivery: allowed (each unit claims itself), but worth seeing
        print(f"  outbox rows run more than once: {rerun}")

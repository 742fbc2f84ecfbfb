"""Round close of a failed film at scale, against localstripe. Run by hand, never in `make test`.

    .venv/bin/python bench/close_rounds.py [--orders 20000] [--backers 5000] [--threads 8]
    .venv/bin/python bench/close_rounds.py --workers 1 2 4 [--orders 2000 20000] [--by-hand]

Builds a fresh PostgreSQL database (next to BENCH_DATABASE_URL, default the
local one) and starts localstripe on 127.0.0.1 in a child process. Then:

1. charges N real PaymentIntents at localstripe (StripeGateway.charge, from
   a few threads), and records them as N paid orders of one film whose
   deadline has passed without reaching its goal, with their payments in the
   ledger (bulk SQL: the orders are set-up, not what is measured);
2. runs `close_rounds` (the `flask funding close-rounds` step): the film
   fails, every order is decided for refund and refunded at localstripe.
   Prints the time to decide, refunds per second, and the baseline from the
   same run: bare `gateway.refund` calls on other PaymentIntents, sequential;
3. runs `close_rounds` again: it must decide and refund nothing;
4. checks: every order refunded and "done", exactly one refund per
   PaymentIntent at localstripe (on a sample), ledger balanced.

With `--workers W ...` (issue 14) the close runs on real Celery worker
processes instead (bench/close_workers.py), once per worker count and order
count, each on a set of its own: a fresh database, a fresh localstripe (its
refund lists scan every refund it holds, so a set must not inherit another's),
N fresh paid orders. Per set: the bare `gateway.refund` rate, sequential and
from W threads (localstripe's own limit); then W workers get one
"jobs.close_rounds" and are timed until every order is refunded; a second
"jobs.close_rounds" and an "outbox.sweep" must schedule nothing and refund
nothing more; each worker's peak memory (VmHWM) is read at the end. With
`--by-hand`, each order count also gets a set closed by `close_rounds` in
this process (the baseline above). Prints a table: refunds/s per worker
count, the ratio to one worker, peak memory per worker.

Asserts nothing about time; exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import DEFAULT_URL, bench_services, create_database, drop_database  # noqa: E402

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SECRET_KEY = "sk_test_bench"
CARD = "4242424242424242"
HOLD_WINDOW = timedelta(minutes=15)


def start_localstripe() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "crowdfund.dev.localstripe_server", str(port)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/js.stripe.com/v3/", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("localstripe did not start")


def gateway(api_base: str):  # type: ignore[no-untyped-def]
    from crowdfund.payments.gateway import StripeGateway

    return StripeGateway(SECRET_KEY, api_base, "whsec_bench", timeout_seconds=60)


def charge_all(api_base: str, count: int, threads: int) -> list[str]:
    """`count` succeeded PaymentIntents of $50.00 each; returns their ids."""
    from crowdfund.dev.localstripe_server import create_card_payment_method

    local = __import__("threading").local()

    def one(n: int) -> str:
        if not hasattr(local, "gateway"):
            local.gateway = gateway(api_base)
        # A fresh card per charge, as each backer brings their own.
        method = create_card_payment_method(api_base, SECRET_KEY, CARD)
        outcome = local.gateway.charge(5000, "usd", method, {"bench": str(n)})
        if outcome.status != "succeeded" or not outcome.payment_intent_id:
            raise RuntimeError(f"charge {n}: {outcome}")
        return str(outcome.payment_intent_id)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count), chunksize=64))


def fill(url: str, intents: list[str], backers: int) -> int:
    """A failed round in waiting: a film past its deadline, goal not met, with
    one paid order per PaymentIntent, counters and ledger to match."""
    from crowdfund.ledger import Account, EntryKind
    from crowdfund.migrate import upgrade

    upgrade(url)
    engine = create_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    past = now - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO users (email, display_name, password_hash, session_version, is_active, created_at,
                               email_verified_at)
            SELECT 'b' || g || '@bench.test', 'Backer ' || g, 'x', 1, true, :now, :now FROM generate_series(1, :n) g
        """), {"now": now, "n": backers})
        conn.execute(text("INSERT INTO studios (name, created_at) VALUES ('Bench Studio', :now)"), {"now": now})
        film_id = conn.execute(text("""
            INSERT INTO films (studio_id, slug, title, logline, synopsis, risks, funding_goal_cents,
                stake_price_cents, stake_cap, per_backer_limit, deadline, timezone, expected_release_date,
                recoup_share_bps, recoup_multiple_bps, profit_share_bps, state, created_at, updated_at, opened_at)
            VALUES ((SELECT id FROM studios LIMIT 1), 'failed-film', 'Failed Film', 'x', 'x', '',
                :goal, 5000, :cap, :cap, :past, 'UTC', :release, 5000, 12000, 1000, 'funding', :past, :past, :past)
            RETURNING id"""), {"goal": 5000 * len(intents) * 10, "cap": len(intents) * 2, "past": past,
                               "release": (now + timedelta(days=365)).date()}).scalar_one()
        conn.execute(text("""CREATE TEMP TABLE bench_intents (n serial, intent text) ON COMMIT DROP"""))
        conn.execute(text("INSERT INTO bench_intents (intent) VALUES (:i)"), [{"i": i} for i in intents])
        conn.execute(text("""
            INSERT INTO orders (reference, film_id, user_id, units, unit_price_cents, amount_cents, status,
                idempotency_key, created_at, expires_at, paid_at, stripe_payment_intent_id)
            SELECT 'RS-B' || lpad(n::text, 9, '0'), :film, 1 + (n - 1) % :backers, 1, 5000, 5000, 'paid',
                'bench-key-' || lpad(n::text, 9, '0'), :past, :past, :past, intent
            FROM bench_intents"""), {"film": film_id, "backers": backers, "past": past})
        conn.execute(text("""INSERT INTO film_inventory (film_id, cap, sold, held)
                             VALUES (:film, :cap, :sold, 0)"""),
                     {"film": film_id, "cap": len(intents) * 2, "sold": len(intents)})
        conn.execute(text("""INSERT INTO backer_positions (film_id, user_id, units)
                             SELECT film_id, user_id, sum(units) FROM orders WHERE film_id = :film
                             GROUP BY film_id, user_id"""), {"film": film_id})
        conn.execute(text("""INSERT INTO journal_entries (key, kind, film_id, order_id, memo, created_at)
                             SELECT :key_prefix || id, :kind, film_id, id, 'Order ' || reference, :past
                             FROM orders WHERE film_id = :film"""),
                     {"film": film_id, "past": past, "key_prefix": EntryKind.PAYMENT.key_prefix,
                      "kind": EntryKind.PAYMENT.value})
        conn.execute(text("""INSERT INTO journal_lines (entry_id, account, amount_cents, line_no)
                             SELECT e.id, :cash, o.amount_cents, 0
                             FROM journal_entries e JOIN orders o ON o.id = e.order_id
                             UNION ALL
                             SELECT e.id, :escrow, -o.amount_cents, 1
                             FROM journal_entries e JOIN orders o ON o.id = e.order_id"""),
                     {"cash": Account.BACKER_CASH.value, "escrow": Account.escrow(film_id)})
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return film_id


def close(url: str, api_base: str, batch_size: int) -> tuple[object, float]:
    from crowdfund.workflows.round_close import close_rounds

    services = bench_services(url, STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_API_BASE=api_base,
                              STRIPE_WEBHOOK_SECRET="whsec_bench", STRIPE_TIMEOUT_SECONDS=60)
    with services.sessions() as session:
        started = time.perf_counter()
        report = close_rounds(session, services.gateway, now=datetime.now(UTC), hold_window=HOLD_WINDOW,
                              fee_bps=500, batch_size=batch_size)
        seconds = time.perf_counter() - started
    services.close()
    return report, seconds


def refund_counts(api_base: str, intents: list[str]) -> list[int]:
    with gateway(api_base) as gw:
        return [len(gw.find_refunds(intent)) for intent in intents]


def bare_refunds(api_base: str, intents: list[str], threads: int = 1) -> float:
    """Refunds per second of bare `gateway.refund` calls, no database, from `threads` threads."""
    local = __import__("threading").local()

    def one(intent: str) -> None:
        if not hasattr(local, "gateway"):
            local.gateway = gateway(api_base)
        local.gateway.refund(intent, 5000, idempotency_key=f"baseline-{intent}")

    started = time.perf_counter()
    if threads == 1:
        for intent in intents:
            one(intent)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, intents))
    return len(intents) / (time.perf_counter() - started) if intents else 0.0


def check_film(url: str, api_base: str, film_id: int, orders: list[str]) -> list[str]:
    """Every order refunded and done, one refund per PaymentIntent (sample), counters at 0, ledger balanced."""
    from crowdfund import ledger
    from crowdfund.db import make_engine, make_sessionmaker

    problems = []
    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        balance = ledger.trial_balance(session)
        statuses = dict(session.execute(text(
            "SELECT status || '/' || coalesce(refund_state, '-'), count(*) FROM orders WHERE film_id = :f "
            "GROUP BY 1"), {"f": film_id}).all())
        sold_held = session.execute(text("SELECT sold, held FROM film_inventory WHERE film_id = :f"),
                                    {"f": film_id}).one()
    engine.dispose()
    counts = refund_counts(api_base, random.Random(8).sample(orders, min(200, len(orders))))
    print(f"checks: orders {statuses}; film sold/held {tuple(sold_held)}; ledger trial balance {balance}; "
          f"refunds per PaymentIntent on a sample of {len(counts)}: {sorted(set(counts))}")
    if statuses != {"refunded/done": len(orders)}:
        problems.append(f"orders not all refunded: {statuses}")
    if balance != 0:
        problems.append(f"ledger unbalanced by {balance}")
    if set(counts) != {1}:
        problems.append("some PaymentIntent has no refund or more than one")
    if tuple(sold_held) != (0, 0):
        problems.append(f"film counters left at {tuple(sold_held)}")
    return problems


def by_hand(url: str, api_base: str, film_id: int, orders: list[str], batch_size: int) -> tuple[float, list[str]]:
    """close_rounds in this process, twice (the second must do nothing); refunds/s and problems."""
    report, seconds = close(url, api_base, batch_size)
    rate = report.refunds_made / seconds if seconds else 0.0  # type: ignore[attr-defined]
    print(f"close-rounds: failed {len(report.failed)} film(s), {report.refunds_decided:,} refunds decided, "  # type: ignore[attr-defined]
          f"{report.refunds_made:,} made in {seconds:.1f} s: {rate:,.0f} refunds/s")  # type: ignore[attr-defined]
    again, seconds_again = close(url, api_base, batch_size)
    print(f"second run: {again.refunds_decided} decided, {again.refunds_made} made "  # type: ignore[attr-defined]
          f"in {seconds_again:.2f} s (must be 0 and 0)")
    problems = []
    if again.refunds_decided or again.refunds_made or again.failed:  # type: ignore[attr-defined]
        problems.append("the second run did something")
    if report.refunds_made != len(orders):  # type: ignore[attr-defined]
        problems.append(f"{report.refunds_made} refunds made for {len(orders)} orders")  # type: ignore[attr-defined]
    return rate, problems


def main_by_hand(args: argparse.Namespace, base: str) -> int:
    url = create_database(base, "bench_close")
    localstripe, api_base = start_localstripe()
    orders_wanted = args.orders[0]
    try:
        began = time.perf_counter()
        intents = charge_all(api_base, orders_wanted + args.baseline, args.threads)
        charged = time.perf_counter() - began
        print(f"charged {len(intents):,} PaymentIntents at localstripe in {charged:.1f} s "
              f"({len(intents) / charged:,.0f}/s, {args.threads} threads)", flush=True)
        orders, spare = intents[:orders_wanted], intents[orders_wanted:]
        film_id = fill(url, orders, args.backers)
        print(f"data: failed film with {len(orders):,} paid orders over {min(args.backers, len(orders)):,} backers",
              flush=True)
        # Baseline, same run: the refund calls alone, one after another, no database.
        bare = bare_refunds(api_base, spare)
        rate, problems = by_hand(url, api_base, film_id, orders, args.batch_size)
        if spare:
            print(f"  baseline (bare gateway.refund, sequential, same localstripe): {bare:,.0f} refunds/s; "
                  f"close-rounds / baseline = {rate / bare:.0%}")
        problems += check_film(url, api_base, film_id, orders)
        print("all checks passed" if not problems else "PROBLEMS: " + "; ".join(problems))
        return 1 if problems else 0
    finally:
        localstripe.terminate()
        localstripe.wait(timeout=10)
        if not args.keep:
            drop_database(url)


def one_set(args: argparse.Namespace, base: str, count: int, workers: int, logdir: Path) -> dict[str, Any]:
    """One fresh set (database, localstripe, `count` paid orders) closed by `workers` workers (0: by hand)."""
    from bench.close_workers import cpu_seconds, run_on_workers

    label = f"{count:,} orders, " + (f"{workers} worker(s)" if workers else "by hand, in process")
    print(f"\n== {label}", flush=True)
    url = create_database(base, "bench_close")
    localstripe, api_base = start_localstripe()
    row: dict[str, Any] = {"orders": count, "workers": workers, "problems": []}
    try:
        began = time.perf_counter()
        threads = max(1, workers)
        intents = charge_all(api_base, count + args.baseline * (2 if threads > 1 else 1), args.threads)
        charged = time.perf_counter() - began
        orders, spare = intents[:count], intents[count:]
        film_id = fill(url, orders, args.backers)
        print(f"charged {len(intents):,} PaymentIntents in {charged:.1f} s; failed film with {count:,} paid orders "
              f"over {min(args.backers, count):,} backers", flush=True)
        before = cpu_seconds([localstripe.pid])
        started = time.perf_counter()
        row["bare"] = bare_refunds(api_base, spare[:args.baseline])
        row["bare_localstripe_cpu"] = (cpu_seconds([localstripe.pid])[localstripe.pid] - before[localstripe.pid]) / (
            time.perf_counter() - started)
        if threads > 1:
            before = cpu_seconds([localstripe.pid])
            started = time.perf_counter()
            row["bare_parallel"] = bare_refunds(api_base, spare[args.baseline:], threads)
            row["bare_parallel_localstripe_cpu"] = (
                cpu_seconds([localstripe.pid])[localstripe.pid] - before[localstripe.pid]) / (
                time.perf_counter() - started)
        print(f"  bare gateway.refund: {row['bare']:,.0f}/s sequential (localstripe "
              f"{row['bare_localstripe_cpu']:.0%} of a core)" + (
                  f", {row['bare_parallel']:,.0f}/s from {threads} threads (localstripe "
                  f"{row['bare_parallel_localstripe_cpu']:.0%} of a core)" if threads > 1 else ""), flush=True)
        if workers:
            sample = random.Random(9).sample(orders, min(200, len(orders)))
            result = run_on_workers(url, api_base, SECRET_KEY, film_id, workers, orders=count,
                                    batch_size=args.batch_size, timeout=args.timeout, localstripe_pid=localstripe.pid,
                                    logdir=logdir, stripe_sample=lambda: refund_counts(api_base, sample))
            row.update(rate=result.rate, seconds=result.done_s, decided=result.decided_s, peak_mb=result.peak_mb,
                       cpu=result.cpu, busy=result.machine_busy)
            row["problems"] += result.problems
            cpu = ", ".join(f"{k} {v / result.done_s:.2f}" for k, v in result.cpu.items()) if result.done_s else ""
            print(f"  {workers} worker(s): all {result.refunds:,} decided at {result.decided_s:.1f} s, refunded at "
                  f"{result.done_s:.1f} s: {result.rate:,.0f} refunds/s; peak memory per worker (VmHWM) "
                  + ", ".join(f"{mb:.0f} MB" for mb in result.peak_mb))
            print(f"  CPU cores used over the run: {cpu}; machine busy {result.machine_busy:.0%} of "
                  f"{os.cpu_count()} cores")
            print("  tasks the workers ran (count, seconds in all): " + ", ".join(
                f"{name} {n:,} ({seconds:.1f} s)" for name, (n, seconds) in result.tasks.items()))
        else:
            row["rate"], problems = by_hand(url, api_base, film_id, orders, args.batch_size)
            row["problems"] += problems
        row["problems"] += check_film(url, api_base, film_id, orders)
        return row
    finally:
        localstripe.terminate()
        localstripe.wait(timeout=10)
        if not args.keep:
            drop_database(url)


def main_workers(args: argparse.Namespace, base: str) -> int:
    import tempfile

    import redis

    from bench.close_workers import BROKER

    if not redis.Redis.from_url(BROKER).ping():
        raise SystemExit(f"the broker {BROKER} does not answer")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-close-") as logdir:
        for count in args.orders:
            for workers in ([0] if args.by_hand else []) + args.workers:
                rows.append(one_set(args, base, count, workers, Path(logdir)))
    print("\n| orders | workers | refunds/s | vs 1 worker | bare refund, sequential | bare, W threads "
          "| decided / refunded at | peak memory per worker (VmHWM) | CPU cores: workers / localstripe / PostgreSQL "
          "| machine busy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        one = next((r for r in rows if r["orders"] == row["orders"] and r["workers"] == 1), None)
        versus = f"{row['rate'] / one['rate']:.2f}x" if one and one.get("rate") and row["workers"] else ""
        parallel = f"{row['bare_parallel']:,.0f}/s" if "bare_parallel" in row else ""
        if row["workers"]:
            seconds = row["seconds"] or 1
            cpu = " / ".join(f"{row['cpu'][k] / seconds:.2f}" for k in ("workers", "localstripe", "postgres"))
            print(f"| {row['orders']:,} | {row['workers']} | {row['rate']:,.0f} | {versus} | {row['bare']:,.0f}/s "
                  f"| {parallel} | {row['decided']:.1f} s / {row['seconds']:.1f} s "
                  f"| {', '.join(f'{mb:.0f}' for mb in row['peak_mb'])} MB | {cpu} | {row['busy']:.0%} |")
        else:
            print(f"| {row['orders']:,} | by hand | {row['rate']:,.0f} | | {row['bare']:,.0f}/s | | | | | |")
    if len(args.orders) > 1 and 1 in args.workers:
        ones = [r for r in rows if r["workers"] == 1 and r.get("peak_mb")]
        print("peak memory of one worker by order count: "
              + ", ".join(f"{r['orders']:,}: {r['peak_mb'][0]:.0f} MB" for r in ones)
              + f" (ratio {ones[-1]['peak_mb'][0] / ones[0]['peak_mb'][0]:.2f})")
    problems = [f"{r['orders']:,}/{r['workers']}: {p}" for r in rows for p in r["problems"]]
    print("all checks passed" if not problems else "PROBLEMS: " + "; ".join(problems))
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[20_000],
                        help="order counts (several only with --workers)")
    parser.add_argument("--workers", type=int, nargs="+", default=[],
                        help="close on this many Celery worker processes (several: one set each)")
    parser.add_argument("--by-hand", action="store_true", help="with --workers: also close one set by hand")
    parser.add_argument("--backers", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=8, help="threads charging the PaymentIntents")
    parser.add_argument("--baseline", type=int, default=500, help="bare gateway.refund calls for the baseline")
    parser.add_argument("--batch-size", type=int, default=500, help="orders per batch (REFUND_BATCH_SIZE)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a set on workers may take")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    base = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if make_url(base).host not in (None, "127.0.0.1", "localhost"):
        parser.error("the benchmark runs against 127.0.0.1 only")
    if args.workers:
        return main_workers(args, base)
    if len(args.orders) > 1 or args.by_hand:
        parser.error("several --orders and --by-hand go with --workers")
    return main_by_hand(args, base)


if __name__ == "__main__":
    sys.exit(main())

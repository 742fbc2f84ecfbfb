"""Payout run and exports at scale, on PostgreSQL. Run by hand, never in `make test`.

    .venv/bin/python bench/payout_run.py [--backers 200000] [--export-rows 100000 1000000]

Builds a fresh database (next to BENCH_DATABASE_URL, default the local
PostgreSQL), fills it with SQL (generate_series), then measures, each in its
own child process so peak memory is the step's own:

- the payout run of a film with 1,000,000 paid stakes over 200,000 backers
  (start_run + write_statements), against a baseline from the same run: the
  bare SQL that reads the same weights and writes the same number of rows;
- the CSV and XLSX exports of runs with 100,000 and 1,000,000 statements:
  peak memory should not grow with the row count (constant memory).

Prints time, peak RSS and ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import DEFAULT_URL, bench_services, create_database, drop_database  # noqa: E402

from sqlalchemy import create_engine, text  # noqa: E402



def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- building the data -----------------------------------------------------------------


def fill(url: str, users: int, films: list[tuple[str, int, str]]) -> dict[str, int]:
    """`films`: (title, backers, units expression in g). Returns film ids by title."""
    from crowdfund.migrate import upgrade

    upgrade(url)
    engine = create_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO users (email, display_name, password_hash, session_version, is_active, created_at,
                               email_verified_at)
            SELECT 'b' || g || '@bench.test', 'Backer ' || g, 'x', 1, true, :now, :now FROM generate_series(1, :n) g
        """), {"now": now, "n": users})
        conn.execute(text("INSERT INTO studios (name, created_at) VALUES ('Bench Studio', :now)"), {"now": now})
        conn.execute(text("""INSERT INTO users (email, display_name, password_hash, session_version, is_active, created_at,
                               email_verified_at)
                             VALUES ('finance@bench.test', 'Finance', 'x', 1, true, :now, :now)"""), {"now": now})
        for title, backers, units in films:
            film_id = conn.execute(text("""
                INSERT INTO films (studio_id, slug, title, logline, synopsis, risks, funding_goal_cents,
                    stake_price_cents, stake_cap, per_backer_limit, deadline, timezone, expected_release_date,
                    recoup_share_bps, recoup_multiple_bps, profit_share_bps, state, created_at, updated_at, released_at)
                VALUES ((SELECT id FROM studios LIMIT 1), :slug, :title, 'x', 'x', '', 100, 5000, 1000000, 1000000,
                    :now, 'UTC', :today, 5000, 12000, 1000, 'released', :now, :now, :now)
                RETURNING id"""), {"slug": title.lower().replace(" ", "-"), "title": title, "now": now,
                                   "today": now.date()}).scalar_one()
            ids[title] = film_id
            conn.execute(text(f"""
                INSERT INTO orders (reference, film_id, user_id, units, unit_price_cents, amount_cents, status,
                    idempotency_key, created_at, expires_at, paid_at)
                SELECT 'F' || :film || '-' || g, :film, g, {units}, 5000, ({units}) * 5000, 'paid',
                    'bench-' || :film || '-' || g, :now, :now, :now
                FROM generate_series(1, :backers) g"""), {"film": film_id, "backers": backers, "now": now})
            conn.execute(text("""
                INSERT INTO box_office_reports (film_id, period_start, period_end, net_receipts_cents, note,
                    status, filed_by_id, filed_at, decided_by_id, decided_at)
                VALUES (:film, :today, :today, 987654321, 'bench', 'approved',
                    (SELECT id FROM users WHERE email = 'finance@bench.test'), :now,
                    (SELECT id FROM users WHERE email = 'finance@bench.test'), :now)"""),
                         {"film": film_id, "today": now.date(), "now": now})
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return ids


# --- children: one measured step each -----------------------------------------------------


def child_run(url: str, film_id: int) -> dict[str, object]:
    from sqlalchemy import select

    from crowdfund.accounts.models import User
    from crowdfund.payouts.models import BoxOfficeReport
    from crowdfund.workflows.payout_run import write_statements
    from crowdfund.payouts.runs import start_run

    # E-mail announcements are measured apart (they are I/O, not the run).
    sessions = bench_services(url).sessions
    started = time.perf_counter()
    with sessions() as session:
        report = session.scalar(select(BoxOfficeReport).where(BoxOfficeReport.film_id == film_id))
        finance = session.scalar(select(User).where(User.email == "finance@bench.test"))
        run = start_run(session, report, finance, now=datetime.now(UTC))
        session.commit()
        write_statements(session, run, now=datetime.now(UTC), batch_size=5000, announce=False)
        total, backers = session.execute(text(
            "SELECT sum(amount_cents), count(*) FROM payout_statements WHERE run_id = :r"), {"r": run.id}).one()
        pool = session.execute(text("SELECT pool_cents FROM payout_runs WHERE id = :r"), {"r": run.id}).scalar_one()
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_rss_mb(), "statements": backers,
            "sum_equals_pool": int(total) == int(pool), "pool_cents": int(pool)}


def child_baseline(url: str, film_id: int) -> dict[str, object]:
    """The floor: read the same weights and write the same number of rows with bare SQL."""
    engine = create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE bare (user_id bigint, stakes bigint, amount bigint)"))
        conn.execute(text("""INSERT INTO bare SELECT user_id, sum(units), sum(units) * 7 FROM orders
                             WHERE film_id = :f AND status = 'paid' GROUP BY user_id ORDER BY user_id"""),
                     {"f": film_id})
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_rss_mb()}


def child_export(url: str, film_id: int, kind: str) -> dict[str, object]:
    from sqlalchemy import select

    from crowdfund.db import make_engine, make_sessionmaker
    from crowdfund.payouts.models import PayoutRun
    from crowdfund.payouts.statements import export_rows
    from crowdfund.reports.exports import run_csv, run_xlsx

    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    started = time.perf_counter()
    size = 0
    with sessions() as session:
        run = session.scalar(select(PayoutRun).where(PayoutRun.film_id == film_id))
        rows = export_rows(session, run.id)
        if kind == "csv":
            for chunk in run_csv(rows, run.pool_cents):
                size += len(chunk.encode())
        else:
            path = run_xlsx(rows, run.pool_cents, "bench")
            size = path.stat().st_size
            path.unlink()
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_rss_mb(), "bytes": size}


def in_child(*args: str) -> dict[str, object]:
    output = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return dict(json.loads(output.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backers", type=int, default=200_000)
    parser.add_argument("--export-rows", type=int, nargs=2, default=[100_000, 1_000_000])
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    base = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    small, large = args.export_rows
    url = create_database(base, "bench_payout")
    try:
        began = time.perf_counter()
        # Half the backers hold 4 stakes, half 6: 1,000,000 stakes over 200,000 backers.
        ids = fill(url, max(args.backers, large), [
            ("Payout Film", args.backers, "(4 + 2 * (g % 2))"),
            ("Export Small", small, "1"),
            ("Export Large", large, "1"),
        ])
        print(f"data: {args.backers:,} backers / {args.backers * 5:,} stakes, export runs of {small:,} and "
              f"{large:,} rows; built in {time.perf_counter() - began:.1f} s")
        baseline = in_child("baseline", url, str(ids["Payout Film"]))
        run = in_child("run", url, str(ids["Payout Film"]))
        print(f"payout run: {run['seconds']:.1f} s, peak {run['peak_mb']:.0f} MB, {run['statements']:,} statements, "
              f"sum == pool: {run['sum_equals_pool']}  (reach: < 60 s, < 300 MB)")
        print(f"  baseline (bare SQL, same weights, same row count): {baseline['seconds']:.2f} s; "
              f"run / baseline = {run['seconds'] / max(baseline['seconds'], 1e-9):.1f}x")
        for title in ("Export Small", "Export Large"):
            in_child("run", url, str(ids[title]))
        for kind in ("csv", "xlsx"):
            small_result = in_child("export", url, str(ids["Export Small"]), kind)
            large_result = in_child("export", url, str(ids["Export Large"]), kind)
            ratio = large_result["peak_mb"] / small_result["peak_mb"]
            print(f"{kind} export: {small:,} rows {small_result['seconds']:.1f} s peak {small_result['peak_mb']:.0f} MB; "
                  f"{large:,} rows {large_result['seconds']:.1f} s peak {large_result['peak_mb']:.0f} MB; "
                  f"peak ratio {ratio:.2f} (constant memory: within 1.20)")
    finally:
        if not args.keep:
            drop_database(url)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        step, url, film = sys.argv[2], sys.argv[3], int(sys.argv[4])
        result = {"run": lambda: child_run(url, film), "baseline": lambda: child_baseline(url, film),
                  "export": lambda: child_export(url, film, sys.argv[5])}[step]()
        print(json.dumps(result))
    else:
        main()

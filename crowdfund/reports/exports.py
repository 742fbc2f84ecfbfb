"""Finance exports: a run's statements as CSV and XLSX, the ledger as CSV.
Everything streams: rows come from the database in batches and leave as
they are written; the XLSX is written with XlsxWriter's constant_memory."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import xlsxwriter
from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund.ledger import JournalEntry, JournalLine
from crowdfund.money import format_cents, format_cents_plain
from crowdfund.reports.csvutil import safe_cell, stream_csv

#: payment_status: "computed (not yet paid)" or "paid on <date>" (PayoutRun.payment_status).
RUN_HEADER = [
    "statement_number",
    "backer_id",
    "name",
    "email",
    "stakes",
    "amount_cents",
    "amount",
    "payment_status",
]


def run_rows(
    rows: Iterable[tuple[str, int, str, str, int, int]],
    pool_cents: int,
    payment_status: str = "computed (not yet paid)",
) -> Iterator[list[object]]:
    """Statement rows, then a totals row that must equal the pool."""
    total_cents, total_stakes = 0, 0
    for number, backer_id, name, email, stakes, amount in rows:
        total_cents += amount
        total_stakes += stakes
        yield [number, backer_id, name, email, stakes, amount, format_cents(amount), payment_status]
    if total_cents != pool_cents:
        raise RuntimeError(f"export total {total_cents} differs from the pool {pool_cents}")
    yield ["TOTAL", "", "", "", total_stakes, total_cents, format_cents(total_cents), payment_status]


def run_csv(
    rows: Iterable[tuple[str, int, str, str, int, int]],
    pool_cents: int,
    payment_status: str = "computed (not yet paid)",
) -> Iterator[str]:
    return stream_csv(RUN_HEADER, run_rows(rows, pool_cents, payment_status))


def run_xlsx(
    rows: Iterable[tuple[str, int, str, str, int, int]],
    pool_cents: int,
    title: str,
    payment_status: str = "computed (not yet paid)",
) -> Path:
    """Write the workbook to a temporary file in constant memory; the caller
    streams and deletes it."""
    handle = tempfile.NamedTemporaryFile(suffix=".xlsx", delete=False)
    handle.close()
    workbook = xlsxwriter.Workbook(
        handle.name, {"constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False}
    )
    sheet = workbook.add_worksheet(title[:31] or "Payout")
    bold = workbook.add_format({"bold": True})
    for col, name in enumerate(RUN_HEADER):
        sheet.write_string(0, col, name, bold)
    row_number = 1
    for row in run_rows(rows, pool_cents, payment_status):
        for col, value in enumerate(row):
            if isinstance(value, int):
                sheet.write_number(row_number, col, value)
            else:
                sheet.write_string(row_number, col, str(safe_cell(value)))
        row_number += 1
    sheet.set_column(0, 0, 18)
    sheet.set_column(2, 3, 28)
    workbook.close()
    return Path(handle.name)


def stream_file(path: Path, chunk: int = 64 * 1024) -> Iterator[bytes]:
    try:
        with path.open("rb") as handle:
            while data := handle.read(chunk):
                yield data
    finally:
        path.unlink(missing_ok=True)


LEDGER_HEADER = [
    "entry_id",
    "created_at",
    "kind",
    "key",
    "film_id",
    "order_id",
    "memo",
    "account",
    "amount_cents",
    "amount",
]


def ledger_rows(session: Session, start: date, end: date, batch_size: int = 5000) -> Iterator[list[object]]:
    """Every journal line of entries made from `start` to `end` (inclusive), by entry."""
    since = datetime.combine(start, time.min, tzinfo=UTC)
    until = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
    statement = (
        select(
            JournalEntry.id,
            JournalEntry.created_at,
            JournalEntry.kind,
            JournalEntry.key,
            JournalEntry.film_id,
            JournalEntry.order_id,
            JournalEntry.memo,
            JournalLine.account,
            JournalLine.amount_cents,
        )
        .join(JournalLine, JournalLine.entry_id == JournalEntry.id)
        .where(JournalEntry.created_at >= since, JournalEntry.created_at < until)
        .order_by(JournalEntry.id, JournalLine.line_no)
        .execution_options(yield_per=batch_size)
    )
    for entry_id, created_at, kind, key, film_id, order_id, memo, account, amount in session.execute(
        statement
    ):
        yield [
            entry_id,
            created_at.isoformat(),
            kind,
            key,
            film_id or "",
            order_id or "",
            memo,
            account,
            amount,
            format_cents_plain(amount),
        ]


def ledger_csv(session: Session, start: date, end: date) -> Iterator[str]:
    return stream_csv(LEDGER_HEADER, ledger_rows(session, start, end))

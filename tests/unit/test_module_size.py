"""Rooms that show what they hold: no module of crowdfund/ grows past 400 lines
(issue 13); a module that would is split by concern instead."""

from __future__ import annotations

from pathlib import Path

LIMIT = 400
PACKAGE = Path(__file__).resolve().parents[2] / "crowdfund"


def test_no_module_of_the_app_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")
    }
    assert len(sizes) > 50  # the walk found the package
    assert {name: lines for name, lines in sizes.items() if lines > LIMIT} == {}

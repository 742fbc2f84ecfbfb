"""Text rules: single-line fields refuse line breaks and control characters,
multi-line fields keep line breaks as LF; both are stored NFC-normalised."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crowdfund.films.rules import film_input_problems
from crowdfund.text import TextProblem, multi_line, single_line
from tests.factories import film_input

LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"]
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
OTHER_CONTROLS = ["\x00", "\x07", "\t", "\x1b", "\x7f", "\x9b"]


@pytest.mark.parametrize("bad", LINE_BREAKS + BIDI + OTHER_CONTROLS)
def test_single_line_refuses_breaks_controls_and_bidi_overrides(bad: str) -> None:
    with pytest.raises(TextProblem) as caught:
        single_line(f"Harbour{bad}Lights", "The title")
    assert caught.value.message.startswith("The title ")


def test_single_line_is_nfc_and_stripped() -> None:
    assert single_line("  Cafe\u0301 Noir ", "The title") == "Caf\u00e9 Noir"
    # Joiners and marks that make up real text are kept.
    assert (
        single_line("\U0001f468\u200d\U0001f469 \u05e9\u05dc\u05d5\u05dd \u200f", "The title")
        == "\U0001f468\u200d\U0001f469 \u05e9\u05dc\u05d5\u05dd \u200f"
    )


@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n", "\u2028", "\u2029", "\x85"])
def test_multi_line_keeps_line_breaks_as_lf(newline: str) -> None:
    assert (
        multi_line(f"First.{newline}Second.\tTabbed e\u0301", "The synopsis")
        == "First.\nSecond.\tTabbed \u00e9"
    )


@pytest.mark.parametrize("bad", ["\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x9b"] + BIDI)
def test_multi_line_refuses_other_controls(bad: str) -> None:
    with pytest.raises(TextProblem, match="^The synopsis "):
        multi_line(f"One{bad}two", "The synopsis")


@given(st.text())
def test_single_line_output_never_has_a_line_break_or_control(text: str) -> None:
    try:
        cleaned = single_line(text, "The title")
    except TextProblem:
        return
    assert cleaned == unicodedata.normalize("NFC", cleaned) == cleaned.strip()
    assert len(cleaned.splitlines()) <= 1
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in cleaned)


@given(st.text())
def test_multi_line_output_has_only_lf_breaks(text: str) -> None:
    try:
        cleaned = multi_line(text, "The synopsis")
    except TextProblem:
        return
    assert cleaned == unicodedata.normalize("NFC", cleaned)
    assert cleaned.splitlines() == (cleaned.split("\n") if cleaned else [])
    assert not any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in cleaned)


def test_film_rules_name_the_field_of_bad_text() -> None:
    problems = film_input_problems(
        film_input(title="A\nB", logline="x\u2028y", synopsis="ok\r\nfine", risks="bad\x07")
    )
    assert problems["title"].startswith("The title") and problems["logline"].startswith("The logline")
    assert problems["risks"].startswith("The risks") and "synopsis" not in problems

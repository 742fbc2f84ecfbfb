"""Rules for text people type. Pure: no database, no Flask.

A single-line field (a title, a name, a cinema) can reach an e-mail header or
a page title, where a line break splits the header and a bidi override hides
what the text says. So it refuses every control character (Unicode Cc, TAB
included), the line and paragraph separators and the invisible bidi
overrides, and is stored NFC-normalised and stripped. A multi-line field (a
synopsis, a reason) keeps its line breaks, as LF, and refuses the rest.
The forms' validators and the services both call these functions, so a form
shows the message beside the field and nothing that bypasses a form can
store what it would refuse.
"""

from __future__ import annotations

import re
import unicodedata

from crowdfund.errors import DomainError

#: Embedding/override (U+202A-U+202E) and isolate (U+2066-U+2069) controls:
#: invisible, and they reorder the text around them.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: U+0085 is Cc already; U+2028/U+2029 are the only Zl/Zp characters.
LINE_SEPARATORS = frozenset("\u0085\u2028\u2029")
_NEWLINES = re.compile("\r\n|\r|\u2028|\u2029|\u0085")


class TextProblem(ValueError):
    """The text breaks a rule; `message` names the field and says what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _refused(char: str, *, allow: frozenset[str]) -> bool:
    if char in allow:
        return False
    if char in BIDI_CONTROLS or char in LINE_SEPARATORS:
        return True
    # Cc: C0, DEL, C1 controls. Cs: lone surrogates (never valid text).
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp")


def single_line(value: str | None, field: str) -> str:
    """`value` NFC-normalised and stripped, or TextProblem naming `field`
    (as the label reads, e.g. "Title")."""
    text = unicodedata.normalize("NFC", value or "")
    for char in text:
        if char in "\r\n\v\f" or char in LINE_SEPARATORS:
            raise TextProblem(f"{field} must be on one line: remove the line break.")
        if _refused(char, allow=frozenset()):
            raise TextProblem(
                f"{field} cannot contain control or invisible formatting characters "
                f"(found U+{ord(char):04X})."
            )
    return text.strip()


def single_line_field(value: str | None, label: str, field: str) -> str:
    """`single_line(value, label)` for a service: a problem is a DomainError on the form's `field`."""
    try:
        return single_line(value, label)
    except TextProblem as exc:
        raise DomainError(exc.message, field=field) from exc


def multi_line(value: str | None, field: str) -> str:
    """`value` with line breaks as LF, NFC-normalised, trailing space stripped;
    TextProblem naming `field` for any other control character. TAB is kept:
    it is whitespace in a body of text and never reaches a header."""
    text = unicodedata.normalize("NFC", _NEWLINES.sub("\n", value or ""))
    for char in text:
        if _refused(char, allow=frozenset("\n\t")):
            raise TextProblem(
                f"{field} cannot contain control or invisible formatting characters "
                f"(found U+{ord(char):04X})."
            )
    return text.strip()


def single_line_problem(value: str | None, field: str) -> str | None:
    try:
        single_line(value, field)
    except TextProblem as exc:
        return exc.message
    return None


def multi_line_problem(value: str | None, field: str) -> str | None:
    try:
        multi_line(value, field)
    except TextProblem as exc:
        return exc.message
    return None

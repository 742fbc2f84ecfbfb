"""Templates get the actions a user may take, not state strings to compare
(issue 13, point 4): the domain's rules decide which buttons and forms a page
shows (crowdfund/site/actions.py hands them to templates). This test fails if
a template compares a state again, so such comparisons cannot come back."""

from __future__ import annotations

import re
from pathlib import Path

from crowdfund.films.states import FilmState
from crowdfund.funding.models import OrderStatus, RefundState
from crowdfund.funding.rules import HoldPhase
from crowdfund.payouts.models import ReportStatus, RunStatus
from crowdfund.rewards.models import TicketStatus

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

STATE_VALUES = sorted(
    {
        str(v)
        for enum in (FilmState, OrderStatus, RefundState, HoldPhase, ReportStatus, RunStatus, TicketStatus)
        for v in enum
    }
)
_VALUE = "|".join(map(re.escape, STATE_VALUES))
_OP = r"(?:==|!=|\bnot\s+in\b|\bin\b)"
CHECKS = {
    # `film.state == ...`, `order.status != ...`, `row.film_state in (...)`, `refund_state == ...`
    "a state compared": re.compile(r"\b\w*(?:state|status)\s*" + _OP),
    # `... == 'funding'`, `'paid' != ...`, `x in ('draft', ...)`
    "a state value compared": re.compile(
        rf"(?:==|!=)\s*['\"](?:{_VALUE})['\"]|['\"](?:{_VALUE})['\"]\s*(?:==|!=)"
        rf"|\bin\s*[(\[][^)\]]*['\"](?:{_VALUE})['\"]"
    ),
    # The old helper returned a state string for templates to compare.
    "a state string helper": re.compile(r"\bhold_state\("),
}
#: (template, text of the line) that may stay: display only, not a state.
ALLOWED = {
    # The catalogue's section key (the tab in the URL), not a film's state: the hero sits on the first tab.
    ("films/catalogue.html", "{% if section == 'funding' and page.page == 1 %}"),
}


def _jinja(text: str) -> str:
    """The Jinja parts of a text ({{ }} and {% %}), where decisions are made."""
    return " ".join(re.findall(r"\{\{.*?\}\}|\{%.*?%\}", text, re.S))


def test_no_template_compares_state_strings() -> None:
    found = []
    for path in sorted(TEMPLATES.rglob("*")):
        if not path.is_file() or path.suffix not in (".html", ".txt"):
            continue
        name = path.relative_to(TEMPLATES).as_posix()
        text = path.read_text()
        for tag in re.finditer(r"\{\{.*?\}\}|\{%.*?%\}", text, re.S):
            number = text.count("\n", 0, tag.start()) + 1
            line = text.splitlines()[number - 1].strip()
            if (name, line) in ALLOWED:
                continue
            found += [
                f"{name}:{number}: {what}: {tag.group()}"
                for what, check in CHECKS.items()
                if check.search(tag.group())
            ]
    assert not found, "Decide in the domain's rules, not in the template:\n" + "\n".join(found)


def test_the_check_finds_what_it_should() -> None:
    for bad in (
        "{% if film.state == 'draft' %}",
        "{% if order.status != 'paid' %}",
        "{% if film.state in ('draft', 'in_review') %}",
        "{% if 'paid' == x %}",
        "{{ 'a' if ticket.status == 'booked' else 'b' }}",
        "{% if row.film_state not in x %}",
        "{% set s = hold_state(order) %}",
        '{% if x == "funding" %}',
        "{% if x in ['paid'] %}",
    ):
        assert any(check.search(_jinja(bad)) for check in CHECKS.values()), bad
    for good in (
        '{% if "release" in actions %}',
        "{{ film.state | state_label }}",
        "{% if category == 'error' %}",
        "{{ order_status_label(order_shown_status(order)) }}",
        '<p class="status-paid">paid</p>',
        '{% set m = {"refunded": "Refund in progress"} %}',
    ):
        assert not any(check.search(_jinja(good)) for check in CHECKS.values()), good

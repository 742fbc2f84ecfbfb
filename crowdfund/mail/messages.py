"""Building a message: templates/emails/<template>.txt rendered, and the
complete RFC 5322 message, with header values refused if they are not one line.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

from config import BASE_DIR
from crowdfund.money import format_cents

_email_loader = FileSystemLoader(str(BASE_DIR / "templates" / "emails"))
_templates = Environment(
    loader=_email_loader,
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)
_templates.filters["cents"] = format_cents


def local_time(moment: datetime | None, time_zone: str | None) -> str:
    """`moment` in the recipient's zone, with the zone's name: "12 Mar 2027,
    18:00 JST (Asia/Tokyo)"; UTC without a zone. An unknown stored zone falls
    back to UTC rather than failing the message."""
    if moment is None:
        return ""
    zone: Any = UTC
    if time_zone:
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            time_zone = None
    shown = moment.astimezone(zone)
    text = shown.strftime("%d %b %Y, %H:%M %Z")
    return f"{text} ({time_zone})" if time_zone and time_zone != "UTC" else text


_templates.filters["local"] = local_time


@cache
def _compiled(template: str) -> tuple[Template, Template]:
    """templates/emails/<template>.txt: the first line is "Subject: ...", the rest the body.

    Subject and body are rendered separately, so a line break inside a value
    stays in the Subject (and is refused there) instead of silently moving the
    rest of the subject into the body."""
    source, _, _ = _email_loader.get_source(_templates, f"{template}.txt")
    first, _, body = source.partition("\n")
    return _templates.from_string(first.removeprefix("Subject:")), _templates.from_string(body)


def render(template: str, **context: Any) -> tuple[str, str]:
    """(subject, body) from templates/emails/<template>.txt."""
    subject, body = _compiled(template)
    return subject.render(**context).strip(), body.render(**context).lstrip("\n")


def _refuse_unsafe_header(name: str, value: str) -> None:
    """Headers are one line: no control characters (TAB aside), no line or
    paragraph separators. Python's email policy refuses CR, LF, VT, FF, FS, GS,
    RS, U+0085, U+2028 and U+2029; this also refuses NUL, ESC, DEL and the rest
    whatever the Python version."""
    for char in value:
        if (unicodedata.category(char) in ("Cc", "Zl", "Zp")) and char != "\t":
            raise ValueError(
                f"Header values may not contain line breaks or control characters: "
                f"the {name} has U+{ord(char):04X}"
            )


def build_message(*, to: str, subject: str, body: str, sender: str, now: datetime) -> str:
    """The complete message, ready to send; raises ValueError if it cannot be built."""
    _refuse_unsafe_header("To", to)
    _refuse_unsafe_header("Subject", subject)
    if "\x00" in body:
        raise ValueError("the body contains a NUL character")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain="reelshare.test")
    # Quoted-printable keeps the stored message ASCII (and so exactly what is sent).
    message.set_content(body, cte="7bit" if body.isascii() else "quoted-printable")
    return message.as_string()

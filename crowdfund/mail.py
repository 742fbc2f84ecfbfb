"""E-mail, sent once and only after the transaction that caused it commits.

`queue_email()` records the message under a unique key in the caller's
transaction (a retried step finds the key and sends nothing) and hands it to
the mailer after the commit. No Flask here: the app puts its mailer in its
sessions' info.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from config import BASE_DIR
from crowdfund.db import Base, UTCDateTime, after_commit, utcnow
from crowdfund.money import format_cents

log = logging.getLogger(__name__)

_templates = Environment(
    loader=FileSystemLoader(str(BASE_DIR / "templates" / "emails")),
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)
_templates.filters["cents"] = format_cents
_templates.filters["utc"] = lambda d: d.strftime("%d %b %Y, %H:%M UTC") if d else ""


class SentEmail(Base):
    """One row per e-mail ever queued; the key makes sending idempotent."""

    __tablename__ = "sent_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


@dataclass
class Mailer:
    backend: str = "console"
    server: str = "127.0.0.1"
    port: int = 25
    folder: str = str(BASE_DIR / "instance" / "mail")
    sender: str = "Reelshare <no-reply@reelshare.test>"
    #: The "memory" backend keeps messages here (tests of code without SMTP).
    outbox: list[EmailMessage] = field(default_factory=list)

    def send(self, message: EmailMessage) -> None:
        message["From"] = self.sender
        try:
            if self.backend == "smtp":
                with smtplib.SMTP(self.server, self.port, timeout=10) as smtp:
                    smtp.send_message(message)
            elif self.backend == "folder":
                folder = Path(self.folder)
                folder.mkdir(parents=True, exist_ok=True)
                name = message["Message-ID"].strip("<>").replace("@", "_")
                (folder / f"{name}.eml").write_bytes(bytes(message))
            elif self.backend == "memory":
                self.outbox.append(message)
            elif self.backend == "none":
                pass
            else:
                print(message.as_string())
        except OSError:
            # The commit stands; a lost mail is logged, never turned into a 500.
            log.exception("could not send e-mail %r to %s", message["Subject"], message["To"])


def mailer_from_config(config: Any) -> Mailer:
    return Mailer(
        backend=config["MAIL_BACKEND"],
        server=config["MAIL_SERVER"],
        port=int(config["MAIL_PORT"]),
        folder=config["MAIL_FOLDER"],
        sender=config["MAIL_SENDER"],
    )


def render(template: str, **context: Any) -> tuple[str, str]:
    """(subject, body) from templates/emails/<template>.txt; the first line is the subject."""
    text = _templates.get_template(f"{template}.txt").render(**context)
    subject, _, body = text.partition("\n")
    return subject.removeprefix("Subject:").strip(), body.lstrip("\n")


def queue_email(session: Session, *, key: str, to: str, template: str, **context: Any) -> bool:
    """Send once after commit; False when a mail with this key was queued before."""
    if session.scalar(select(SentEmail.id).where(SentEmail.key == key)) is not None:
        return False
    subject, body = render(template, **context)
    try:
        with session.begin_nested():
            session.add(SentEmail(key=key, to_address=to, subject=subject[:200]))
    except IntegrityError:
        return False
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="reelshare.test")
    message.set_content(body)
    mailer: Mailer = session.info.get("mailer") or Mailer()
    after_commit(session, lambda: mailer.send(message))
    return True

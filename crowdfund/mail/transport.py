"""How a message leaves: the mailer's backends (SMTP, a folder, memory, the
console, none). No Flask here: the app puts its mailer in its sessions' info.
"""

from __future__ import annotations

import smtplib
import unicodedata
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from config import BASE_DIR


@dataclass
class Mailer:
    backend: str = "console"
    server: str = "127.0.0.1"
    port: int = 25
    folder: str = str(BASE_DIR / "instance" / "mail")
    sender: str = "Reelshare <no-reply@reelshare.test>"
    timeout_seconds: float = 10
    #: The "memory" backend keeps messages here (tests of code without SMTP).
    outbox: list[EmailMessage] = field(default_factory=list)

    def send_batch(self, messages: list[EmailMessage]) -> list[str | None]:
        """Send each message (one SMTP connection for the batch); per message
        None if it was accepted, else the error."""
        if self.backend == "smtp":
            return self._send_smtp(messages)
        results: list[str | None] = []
        for message in messages:
            try:
                self._send_local(message)
                results.append(None)
            except OSError as exc:
                results.append(error_text(exc))
        return results

    def _send_smtp(self, messages: list[EmailMessage]) -> list[str | None]:
        try:
            smtp = smtplib.SMTP(self.server, self.port, timeout=self.timeout_seconds)
        except OSError as exc:
            return [error_text(exc)] * len(messages)
        results: list[str | None] = []
        try:
            for message in messages:
                try:
                    smtp.send_message(message)
                    results.append(None)
                except (OSError, smtplib.SMTPException) as exc:
                    results.append(error_text(exc))
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return results

    def _send_local(self, message: EmailMessage) -> None:
        if self.backend == "folder":
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


def mailer_from_config(config: Any) -> Mailer:
    return Mailer(
        backend=config["MAIL_BACKEND"],
        server=config["MAIL_SERVER"],
        port=int(config["MAIL_PORT"]),
        folder=config["MAIL_FOLDER"],
        sender=config["MAIL_SENDER"],
    )


def displayable(text: str) -> str:
    """For columns people read (and PostgreSQL, which stores no NUL): control
    and separator characters shown as U+FFFD."""
    return "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def error_text(exc: BaseException) -> str:
    return displayable(f"{type(exc).__name__}: {exc}")[:2000]

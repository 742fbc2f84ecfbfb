"""What domain code may ask of the app it runs in, through its session.

The app's services (crowdfund/app_services.py: `AppServices`) are one object,
built once at app creation. Its sessionmaker puts that object in every
session's info under one key, and domain code, which imports no Flask, reaches
it only through `services_of(session)`. The object is typed here by what the
domain may use of it (a Protocol the AppServices satisfies), so this core module
names nothing above core: no Stripe gateway, no funding type.

There is no default: a session made without the app's services (a bare
`sessionmaker`) fails at once with a message naming the cause, rather than
hashing with other costs, mailing from another sender or caching nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from argon2 import PasswordHasher
from sqlalchemy.orm import Session

#: The one entry of `Session.info` that holds the app's services.
SERVICES_KEY = "services"


class MailSender(Protocol):
    """What queueing an e-mail needs of the app's mailer."""

    @property
    def sender(self) -> str: ...


class SecretSealer(Protocol):
    """Encryption at rest (crowdfund/secrets_box.py: SecretBox)."""

    def seal(self, plain: str) -> str: ...

    def open(self, token: str) -> str: ...


class TaskHandoff(Protocol):
    """What the outboxes need of the app's task queue (crowdfund/outbox.py: Handoff)."""

    def task(self, task_id: int, countdown: float = 0) -> bool: ...

    def mail_queued(self) -> None: ...


class SlugCache(Protocol):
    """The app's short-lived cache of selling films' hold terms, by slug
    (funding's HoldTermsCache; its values are funding's HoldTerms)."""

    def get(self, slug: str) -> Any: ...

    def put(self, terms: Any) -> None: ...

    def forget(self, slug: str) -> None: ...

    def clear(self) -> None: ...


class SessionServices(Protocol):
    """The part of the app's services that domain code uses."""

    @property
    def mailer(self) -> MailSender: ...

    @property
    def handoff(self) -> TaskHandoff: ...

    @property
    def secret_box(self) -> SecretSealer: ...

    @property
    def password_hasher(self) -> PasswordHasher: ...

    @property
    def hold_terms_cache(self) -> SlugCache: ...

    @property
    def public_url(self) -> str:
        """The site's address for links in e-mail ("https://reelshare.example", no trailing slash)."""
        ...


class ServicesMissing(RuntimeError):
    """A session was made without the app's services (a programming error)."""


def services_of(session: Session) -> SessionServices:
    """The services of the app that made `session`."""
    try:
        services: SessionServices = session.info[SERVICES_KEY]
    except KeyError:
        raise ServicesMissing(
            "This session carries no app services: make sessions with the app's sessionmaker "
            "(AppServices.sessions, from crowdfund.app_services.build_services), not a bare one."
        ) from None
    return services

"""Domain errors. Services raise them; views turn them into a message and a 4xx."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain refused the operation; `message` is shown to the user."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    status_code = 404


class Forbidden(DomainError):
    status_code = 403


class Conflict(DomainError):
    """The request is valid but the current state refuses it (sold out, already taken)."""

    status_code = 409


class InvalidTransition(Conflict):
    def __init__(self, machine: str, current: str, target: str) -> None:
        super().__init__(f"A {machine} cannot go from {current} to {target}.")
        self.machine = machine
        self.current = current
        self.target = target


# --- the payment service (crowdfund/payments/gateway.py raises these) ------------------


class GatewayError(Exception):
    """Stripe could not be asked, or refused the request itself. `str()` is
    safe to show a customer; `detail` is for the log. `retryable` is True when
    trying again later may work (network, timeout, rate limit, Stripe 5xx)."""

    def __init__(self, message: str, detail: str = "", retryable: bool = True) -> None:
        super().__init__(message)
        self.detail = detail
        self.retryable = retryable


class InvalidWebhook(Exception):
    """Bad or stale signature, or a payload that is not a Stripe event."""

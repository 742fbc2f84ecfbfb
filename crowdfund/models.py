"""Imports every model so that `Base.metadata` is complete (Alembic, tests)."""

from crowdfund.accounts.models import RememberToken, Studio, StudioMember, User, UserRole
from crowdfund.accounts.payout_accounts import PayoutAccount
from crowdfund.audit import AuditEvent
from crowdfund.db import Base
from crowdfund.films.models import Film, FilmEvent
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, PaymentAnomaly, StripeEvent
from crowdfund.ledger import JournalEntry, JournalLine
from crowdfund.mail.outbox import SentEmail
from crowdfund.outbox.tasks import OutboxTask
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun, PayoutStatement
from crowdfund.rewards.models import CheckInAttempt, RewardTier, Screening, Ticket
from crowdfund.uploads import StoredFile

metadata = Base.metadata

__all__ = [
    "BackerPosition",
    "BoxOfficeReport",
    "PayoutRun",
    "PayoutStatement",
    "Film",
    "JournalEntry",
    "JournalLine",
    "SentEmail",
    "OutboxTask",
    "PayoutAccount",
    "StripeEvent",
    "PaymentAnomaly",
    "FilmEvent",
    "FilmInventory",
    "Order",
    "StoredFile",
    "Studio",
    "StudioMember",
    "User",
    "UserRole",
    "metadata",
    "AuditEvent",
    "CheckInAttempt",
    "RewardTier",
    "Screening",
    "Ticket",
    "RememberToken",
]

"""Where a backer's money goes: one bank account per backer to withdraw to.

A SEPA account (IBAN and BIC, checked by schwifty) or a US one (ABA routing
number, its check digit checked by python-stdnum, and an account number).
The details are sealed at rest (the app's SecretBox: Fernet keys from the
environment); the page shows them masked. Changing them asks for the
account's password again, and the owner is e-mailed whenever they change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from sqlalchemy import CheckConstraint, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from stdnum.us import rtn

from crowdfund import audit
from crowdfund.accounts.models import User
from crowdfund.accounts.passwords import hasher_for, verify_password
from crowdfund.db import Base, UTCDateTime
from crowdfund.errors import DomainError
from crowdfund.mail.outbox import queue_email
from crowdfund.session_services import services_of

SEPA, US = "sepa", "us"


class PayoutAccount(Base):
    __tablename__ = "payout_accounts"
    __table_args__ = (CheckConstraint("kind IN ('sepa', 'us')", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    holder_name: Mapped[str] = mapped_column(String(140))
    #: The details (JSON) sealed with the app's keys: never stored in the clear.
    sealed_details: Mapped[str] = mapped_column(Text)
    #: What pages show: the country and the last four characters.
    masked: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class AccountInput:
    kind: str
    holder_name: str
    iban: str = ""
    bic: str = ""
    routing_number: str = ""
    account_number: str = ""


def _problem(message: str, field: str) -> DomainError:
    return DomainError(message, field=field)


def checked_details(data: AccountInput) -> tuple[dict[str, str], str]:
    """The details to seal and their masked form; DomainError naming the field otherwise."""
    holder = " ".join(data.holder_name.split())
    if not holder or len(holder) > 140:
        raise _problem(
            "Enter the account holder's name as the bank knows it (at most 140 characters).", "holder_name"
        )
    if data.kind == SEPA:
        try:
            iban = IBAN(data.iban)
        except SchwiftyException:
            raise _problem(
                "That IBAN is not valid: check it against your bank statement (its check digits do not match).",
                "iban",
            ) from None
        try:
            bic = BIC(data.bic) if data.bic.strip() else iban.bic
        except SchwiftyException:
            raise _problem("That BIC is not valid: it has 8 or 11 letters and digits.", "bic") from None
        if bic is None:
            raise _problem("Enter the bank's BIC: we could not find it from the IBAN.", "bic")
        compact = iban.compact
        return {"iban": compact, "bic": str(bic.compact)}, f"{compact[:2]} •••• {compact[-4:]}"
    if data.kind == US:
        routing = "".join(data.routing_number.split())
        account = "".join(data.account_number.split())
        if not rtn.is_valid(routing):
            raise _problem(
                "That routing number is not valid: it has 9 digits and its check digit does not match.",
                "routing_number",
            )
        if not (account.isascii() and account.isdigit() and 4 <= len(account) <= 17):
            raise _problem("Enter the account number: 4 to 17 digits.", "account_number")
        return {"routing_number": routing, "account_number": account}, f"US •••• {account[-4:]}"
    raise _problem("Choose a SEPA (IBAN) or a US bank account.", "kind")


def payout_account_of(session: Session, user_id: int) -> PayoutAccount | None:
    return session.scalar(select(PayoutAccount).where(PayoutAccount.user_id == user_id))


def details_of(session: Session, account: PayoutAccount) -> dict[str, str]:
    """The unsealed details (for a payout file; never for a page)."""
    return dict(json.loads(services_of(session).secret_box.open(account.sealed_details)))


def set_payout_account(
    session: Session, user: User, password: str, data: AccountInput, *, now: datetime
) -> PayoutAccount:
    """Add or replace the user's bank account, after checking their password
    again; the owner is told by e-mail. Nothing is written if anything is wrong."""
    if not verify_password(hasher_for(session), user.password_hash, password or ""):
        raise _problem("That is not your password. Enter it again to change your bank account.", "password")
    details, masked = checked_details(data)
    sealed = services_of(session).secret_box.seal(json.dumps(details, sort_keys=True))
    account = payout_account_of(session, user.id)
    before = None if account is None else {"kind": account.kind, "masked": account.masked}
    if account is None:
        account = PayoutAccount(user_id=user.id)
        session.add(account)
    account.kind, account.holder_name = data.kind, " ".join(data.holder_name.split())
    account.sealed_details, account.masked, account.updated_at = sealed, masked, now
    session.flush()
    audit.record(
        session,
        action="payout_account.changed",
        object_type="user",
        object_id=user.id,
        now=now,
        actor=user.id,
        before=before,
        after={"kind": account.kind, "masked": masked},
    )
    queue_email(
        session,
        key=f"payout-account:{user.id}:{now.isoformat()}",
        to=user.email,
        template="payout_account_changed",
        name=user.display_name,
        masked=masked,
        changed_at=now,
        tz=user.time_zone,
    )
    return account

"""A backer's bank account for payouts (issue 15, point 2): validated (IBAN
and BIC by schwifty, US routing numbers by their check digit), sealed at
rest, shown masked, changed only with the password, the owner e-mailed."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from crowdfund.accounts.payout_accounts import PayoutAccount, details_of
from crowdfund.audit import AuditEvent
from crowdfund.secrets_box import SecretBox
from tests.conftest import CheckSession, Client, MailCapture
from tests.factories import PASSWORD, make_user

GOOD_IBAN = "DE89 3704 0044 0532 0130 00"
URL = "/account/bank-account"


def sepa(iban: str = GOOD_IBAN, **more: str) -> dict[str, str]:
    return {"kind": "sepa", "holder_name": "Ada Lovelace", "iban": iban, "password": PASSWORD, **more}


def accounts(db: CheckSession) -> int:
    db.reread()
    return db.scalar(select(func.count()).select_from(PayoutAccount)) or 0


def test_a_backer_adds_an_iban_it_is_sealed_shown_masked_and_the_owner_told(
    client: Client, db: CheckSession, mail: MailCapture
) -> None:
    fan = make_user(db)
    client.login(fan.email, PASSWORD)
    saved = client.post_form(URL, sepa(), follow_redirects=True)
    page = saved.get_data(as_text=True)
    assert saved.status_code == 200 and "DE •••• 3000" in page and "0532013000" not in page
    db.reread()
    account = db.scalar(select(PayoutAccount))
    # Sealed at rest: the row holds no IBAN; the app's key opens it.
    assert "DE89" not in account.sealed_details and "0532013000" not in account.sealed_details
    assert details_of(db, account) == {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"}
    [message] = mail.to(fan.email)
    assert "bank account" in message["Subject"] and "DE •••• 3000" in message.get_content()
    assert db.scalar(select(AuditEvent.action).where(AuditEvent.action == "payout_account.changed"))


@pytest.mark.parametrize(
    ("form", "field_message"),
    [
        (sepa("DE89 3704 0044 0532 0130 01"), "That IBAN is not valid"),  # a bad check digit
        (sepa(bic="NOTABIC"), "That BIC is not valid"),
        (
            {"kind": "us", "holder_name": "Ada", "routing_number": "011000016", "account_number": "12345678"},
            "That routing number is not valid",
        ),
        (
            {"kind": "us", "holder_name": "Ada", "routing_number": "011000015", "account_number": "12ab"},
            "4 to 17 digits",
        ),
        (sepa(holder_name=" "), "Enter the account holder"),
        (sepa(password="wrong password"), "That is not your password"),
        ({"kind": "moon", "holder_name": "Ada", "password": PASSWORD}, "Not a valid choice"),
    ],
)
def test_bad_details_are_refused_with_a_clear_message_and_nothing_written(
    client: Client, db: CheckSession, mail: MailCapture, form: dict[str, str], field_message: str
) -> None:
    fan = make_user(db)
    client.login(fan.email, PASSWORD)
    form = {"password": PASSWORD, **form}
    refused = client.post_form(URL, form)
    assert refused.status_code == 400
    assert field_message in refused.get_data(as_text=True)
    assert accounts(db) == 0 and mail.to(fan.email) == []


def test_a_us_account_and_a_change_that_needs_the_password(
    client: Client, db: CheckSession, mail: MailCapture
) -> None:
    fan = make_user(db)
    client.login(fan.email, PASSWORD)
    us = {"kind": "us", "holder_name": "Ada", "routing_number": "011000015", "account_number": "000123456789"}
    assert client.post_form(URL, {**us, "password": PASSWORD}).status_code == 303
    assert "US •••• 6789" in client.get(URL).get_data(as_text=True)
    # A change without the right password changes nothing.
    assert client.post_form(URL, sepa(password="guess")).status_code == 400
    db.reread()
    assert db.scalar(select(PayoutAccount.masked)) == "US •••• 6789"
    assert client.post_form(URL, sepa()).status_code == 303
    db.reread()
    assert db.scalar(select(PayoutAccount.masked)) == "DE •••• 3000" and accounts(db) == 1
    assert len(mail.to(fan.email)) == 2  # one e-mail per change


def test_the_page_is_the_owners_only(client: Client, db: CheckSession) -> None:
    assert client.get(URL).status_code == 302  # to the login page
    assert client.post(URL, data=sepa()).status_code in (302, 400)
    assert accounts(db) == 0
    fan = make_user(db)
    client.login(fan.email, PASSWORD)
    assert client.post(URL, data=sepa()).status_code == 400  # no CSRF token
    assert accounts(db) == 0


def test_keys_rotate_old_tokens_still_open_and_are_resealed_under_the_new_key() -> None:
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = SecretBox([old]).seal('{"iban": "DE89370400440532013000"}')
    both = SecretBox([new, old])
    assert both.open(sealed) == '{"iban": "DE89370400440532013000"}'
    resealed = both.rotate(sealed)
    assert SecretBox([new]).open(resealed) == '{"iban": "DE89370400440532013000"}'
    with pytest.raises(ValueError, match="no longer configured"):
        SecretBox([new]).open(sealed)

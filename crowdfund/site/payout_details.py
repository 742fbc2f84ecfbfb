"""A backer's bank account for payouts: /account/bank-account."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for

from crowdfund.accounts import payout_accounts
from crowdfund.accounts.models import Role
from crowdfund.errors import DomainError
from crowdfund.site.forms.accounts import PayoutAccountForm
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, now, role_required, user

payout_details_bp = Blueprint("payout_details", __name__)


def _page(form: PayoutAccountForm, status: int = 200) -> Any:
    current = payout_accounts.payout_account_of(db(), user().id)
    return render_template("accounts/bank_account.html", form=form, current=current), status


@payout_details_bp.route("/account/bank-account")
@role_required(Role.FAN)
def bank_account() -> Any:
    return _page(PayoutAccountForm())


@payout_details_bp.route("/account/bank-account", methods=["POST"])
@role_required(Role.FAN)
def save_bank_account() -> Any:
    form = PayoutAccountForm()

    def refused(exc: DomainError) -> Any:
        field = getattr(form, exc.field or "", None)
        if field is not None:
            field.errors = [*field.errors, exc.message]
        else:
            flash(exc.message, "error")
        form.password.data = ""
        return _page(form, 400)

    if not form.validate_on_submit():
        return _page(form, 400)
    data = payout_accounts.AccountInput(
        kind=form.kind.data or "",
        holder_name=form.holder_name.data or "",
        iban=form.iban.data or "",
        bic=form.bic.data or "",
        routing_number=form.routing_number.data or "",
        account_number=form.account_number.data or "",
    )
    with on_error(respond=refused):
        account = payout_accounts.set_payout_account(db(), user(), form.password.data or "", data, now=now())
    flash(f"Your payouts now go to {account.masked}. We sent you an e-mail about the change.", "success")
    return redirect(url_for("payout_details.bank_account"), 303)

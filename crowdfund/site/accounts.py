"""Accounts pages: sign-up, e-mail confirmation, log in and out, password reset, the account page."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response as WerkzeugResponse

from crowdfund.accounts import (
    logins,
    registration,
    tokens,
)
from crowdfund.accounts import (
    users as account_users,
)
from crowdfund.accounts.models import Role, User
from crowdfund.errors import DomainError
from crowdfund.site.extensions import rate_limit
from crowdfund.site.forms.accounts import (
    EmptyForm,
    ForgotPasswordForm,
    LogInForm,
    ResetPasswordForm,
    SignUpForm,
    TimeZoneForm,
)
from crowdfund.site.remember import remember_browser
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, login_required, now, safe_next, user

bp = Blueprint("accounts", __name__)


def home_for(account: User) -> str:
    """Each kind of user lands on their own home page."""
    if account.has_role(Role.ADMIN):
        return url_for("admin.dashboard")
    if account.has_role(Role.FINANCE):
        return url_for("finance.dashboard")
    if account.has_role(Role.STUDIO):
        return url_for("studio.dashboard")
    return url_for("funding.portfolio_page")


def _log_in(account: User, remember: bool = False) -> None:
    """A new session at log-in: nothing set before it (by anyone) survives into it."""
    session.clear()
    login_user(account)
    if remember:
        remember_browser(account)  # a random token of its own, not flask-login's cookie


def _public_link(endpoint: str, **values: Any) -> str:
    # PUBLIC_URL, not the request's Host header (as for password-reset links).
    return current_app.config["PUBLIC_URL"].rstrip("/") + url_for(endpoint, **values)


def _verify_link_for(next_url: str | None) -> Any:
    return lambda token: _public_link("accounts.verify_email", token=token, next=next_url)


SIGNED_UP = (
    "Check your e-mail: we have sent a message to {email}. Open the link in it to confirm your "
    "address, then log in."
)


@bp.route("/signup", methods=["GET", "POST"])
# Counts sign-ups that went through (a 303), not forms sent back with errors.
@rate_limit("RATELIMIT_SIGNUP", key="address", count_statuses=(303,))
def signup() -> Any:
    form = SignUpForm()
    next_url = safe_next(request.args.get("next"))

    def page() -> Any:
        return render_template(
            "accounts/signup.html", form=form, next_url=next_url
        ), 400 if form.errors else 200

    def refused(exc: DomainError) -> Any:
        getattr(form, exc.field or "email").errors.append(exc.message)
        return page()

    if form.validate_on_submit():
        config = current_app.config
        with on_error(respond=refused):
            registration.sign_up(
                db(),
                form.email.data,
                form.password.data,
                form.display_name.data,
                now=now(),
                secret_key=config["SECRET_KEY"],
                verify_link_for=_verify_link_for(next_url),
                owner_links={
                    "login_link": _public_link("accounts.login"),
                    "reset_link": _public_link("accounts.forgot_password"),
                },
                verify_max_age_seconds=config["EMAIL_VERIFY_MAX_AGE_SECONDS"],
            )
        # The same answer whether or not the address already had an account
        # (its owner gets an e-mail instead of a new account).
        flash(SIGNED_UP.format(email=form.email.data.strip()[:254]), "info")
        return redirect(url_for("accounts.login", next=next_url), 303)
    return page()


EMAIL_CONFIRMED = "Your e-mail address is confirmed. You can back films now."


@bp.route("/verify-email/<token>")
def verify_email(token: str) -> Any:
    config = current_app.config
    next_url = safe_next(request.args.get("next"))

    def refused(exc: DomainError) -> Any:
        return _token_page(
            make_response(
                render_template(
                    "accounts/verify_email.html", problem=exc.message, form=EmptyForm(), next_url=next_url
                ),
                400,
            )
        )

    with on_error(respond=refused):
        account = tokens.verify_email(
            db(),
            token,
            secret_key=config["SECRET_KEY"],
            now=now(),
            max_age_seconds=config["EMAIL_VERIFY_MAX_AGE_SECONDS"],
        )
    flash(
        EMAIL_CONFIRMED if current_user.is_authenticated else EMAIL_CONFIRMED + " Log in to continue.",
        "success",
    )
    if current_user.is_authenticated and current_user.id == account.id:
        return _token_page(redirect(next_url or home_for(account), 303))
    return _token_page(redirect(url_for("accounts.login", next=next_url), 303))


def _token_page(response: WerkzeugResponse) -> WerkzeugResponse:
    # The token is in this page's URL: never send it on as a Referer, never cache the page.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/account/verify-email", methods=["POST"])
@rate_limit("RATELIMIT_VERIFY_EMAIL", key="user")
@login_required
def resend_verification() -> Any:
    """Send the confirmation link again (from the account page, or from a refused hold)."""
    next_url = safe_next(request.args.get("next"))
    if not EmptyForm().validate_on_submit():
        abort(400)
    account = user()
    if account.email_verified:
        flash("Your e-mail address is already confirmed.", "info")
    else:
        config = current_app.config
        tokens.send_verification_email(
            db(),
            account,
            secret_key=config["SECRET_KEY"],
            now=now(),
            link_for=_verify_link_for(next_url),
            max_age_seconds=config["EMAIL_VERIFY_MAX_AGE_SECONDS"],
        )
        flash(
            f"We have sent a new confirmation link to {account.email}. It may take a minute to arrive.",
            "info",
        )
    return redirect(next_url or url_for("accounts.my_account"), 303)


@bp.route("/login", methods=["GET", "POST"])
@rate_limit("RATELIMIT_LOGIN_ADDRESS", key="address")
# Per account only failed attempts count, so the owner is not locked out by using the site.
@rate_limit("RATELIMIT_LOGIN_ACCOUNT", key="account", count_statuses=(400,))
def login() -> Any:
    form = LogInForm()
    if form.validate_on_submit():
        account = account_users.authenticate(db(), form.email.data, form.password.data)
        if account is None:
            # One message whether or not the e-mail exists.
            form.password.errors.append("That e-mail and password do not match an account.")
        else:
            _log_in(account, remember=bool(form.remember.data))
            return redirect(safe_next(request.args.get("next")) or home_for(account))
    return (
        render_template("accounts/login.html", form=form, next_url=safe_next(request.args.get("next"))),
        400 if form.errors else 200,
    )


def _log_out_everywhere() -> None:
    # Server-side: the session cookie and every remember-me token of this user stop
    # working, so a copy of either kept from before (another browser, a thief) is refused too.
    if current_user.is_authenticated:
        logins.end_all_sessions(db(), user())
    logout_user()


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    if EmptyForm().validate_on_submit():
        _log_out_everywhere()
        flash("You are logged out.", "info")
    return redirect(url_for("catalogue.home"))


@bp.route("/account/logout-everywhere", methods=["POST"])
@login_required
def logout_everywhere() -> Any:
    if not EmptyForm().validate_on_submit():
        abort(400)
    _log_out_everywhere()
    flash("You are logged out in every browser and on every device.", "info")
    return redirect(url_for("accounts.login"), 303)


RESET_REQUESTED = (
    "If an account uses that address, we have sent it a link to choose a new password. "
    "Check your inbox (and spam folder) in a minute."
)


@bp.route("/forgot-password", methods=["GET", "POST"])
@rate_limit("RATELIMIT_RESET_ADDRESS", key="address")
@rate_limit("RATELIMIT_RESET_ACCOUNT", key="account")
def forgot_password() -> Any:
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        config = current_app.config

        def link_for(token: str) -> str:
            # PUBLIC_URL, not the request's Host header: a forged Host must not
            # get a victim mailed a link to someone else's site.
            return config["PUBLIC_URL"].rstrip("/") + url_for("accounts.reset_password", token=token)

        tokens.request_password_reset(
            db(),
            form.email.data,
            secret_key=config["SECRET_KEY"],
            now=now(),
            link_for=link_for,
            max_age_seconds=config["PASSWORD_RESET_MAX_AGE_SECONDS"],
        )
        # The same answer whether or not the address has an account.
        flash(RESET_REQUESTED, "info")
        return redirect(url_for("accounts.login"), 303)
    return render_template("accounts/forgot_password.html", form=form), 400 if form.errors else 200


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
@rate_limit("RATELIMIT_RESET_ADDRESS", key="address")
def reset_password(token: str) -> Any:
    config = current_app.config
    options = {
        "secret_key": config["SECRET_KEY"],
        "max_age_seconds": config["PASSWORD_RESET_MAX_AGE_SECONDS"],
    }
    with on_error(respond=lambda exc: _reset_page(None, exc.message, 400)):
        tokens.user_for_reset_token(db(), token, now=now(), **options)
    form = ResetPasswordForm()

    def refused(exc: DomainError) -> Any:
        if exc.field != "password":
            return _reset_page(None, exc.message, 400)
        form.password.errors.append(exc.message)
        return _reset_page(form, None, 400)

    if form.validate_on_submit():
        with on_error(respond=refused):
            tokens.reset_password(db(), token, form.password.data, now=now(), **options)
        # Whoever was logged in in this browser (perhaps someone else) is logged out too.
        logout_user()
        session.clear()
        flash(
            "Your password is changed and every other session is logged out. Log in with the new one.",
            "success",
        )
        return redirect(url_for("accounts.login"), 303)
    return _reset_page(form, None, 400 if form.errors else 200)


def _reset_page(form: ResetPasswordForm | None, problem: str | None, status: int) -> Any:
    return _token_page(
        make_response(render_template("accounts/reset_password.html", form=form, problem=problem), status)
    )


@bp.route("/account")
@login_required
def my_account() -> Any:
    return _account_page(TimeZoneForm(time_zone=user().time_zone or ""))


def _account_page(zone_form: TimeZoneForm, status: int = 200) -> Any:
    return render_template(
        "accounts/account.html",
        account=user(),
        form=EmptyForm(),
        zone_form=zone_form,
        zone_names=account_users.time_zone_names(),
    ), status


@bp.route("/account/time-zone", methods=["POST"])
@login_required
def set_time_zone() -> Any:
    """The zone the account's e-mails show times in."""
    form = TimeZoneForm()

    def refused(exc: DomainError) -> Any:
        form.time_zone.errors = [*form.time_zone.errors, exc.message]
        return _account_page(form, 400)

    if not form.validate_on_submit():
        return _account_page(form, 400)
    with on_error(respond=refused):
        account_users.set_time_zone(db(), user(), form.time_zone.data)
    zone = user().time_zone or "UTC"
    flash(f"Times in your e-mails are now shown in {zone}.", "success")
    return redirect(url_for("accounts.my_account"), 303)


@bp.route("/home")
@login_required
def home() -> Any:
    return redirect(home_for(user()))

"""Every URL of the app, from the URL map: public ones are listed here; every
other one must refuse anonymous users (sent to log in) and users without its
role (403). A new route that is neither fails this test."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from crowdfund.accounts.models import Role
from crowdfund.films.states import FilmState
from tests.conftest import Client
from tests.factories import PASSWORD, hold, make_film, make_studio_user, make_user
from tests.rewards_factories import add_screening, give_ticket

PUBLIC_ENDPOINTS = {
    "static",
    "catalogue.home",
    "catalogue.films",
    "catalogue.film_page",
    "catalogue.stored_file",
    "accounts.signup",
    "accounts.login",
    "accounts.logout",
    # Password reset is for people who cannot log in: the e-mailed signed token is the credential.
    "accounts.forgot_password",
    "accounts.reset_password",
    # E-mail confirmation: the signed token names the address; opening it logs no one in.
    "accounts.verify_email",
    # Authenticated by Stripe's signature instead of a login (tests/http/test_webhooks.py).
    "payments.webhook",
}
#: Public endpoints that only take a POST carrying the caller's own credentials.
ALL_ROLES = {"fan", "studio", "finance", "admin"}
#: An id no row has (the world below makes no statements, reports, runs, tiers, e-mails or tasks).
NO_SUCH_ID = 999_999

#: What each role gets on each GET page it may open, in the world below (a draft
#: film, its studio, one user per role, the fan's hold and ticket of an open film,
#: a screening of it, and no statement, report or run: those pages are 404). A
#: redirect names its target.
EXPECTED_PAGES: dict[str, dict[str, int | str]] = {
    "admin": {
        "accounts.my_account": 200,
        "accounts.home": "/admin/",
        "admin.dashboard": 200,
        "admin.users": 200,
        "admin.user_detail": 200,
        "admin.studios": 200,
        "admin.audit_log": 200,
        "review.queue": 200,
        "review.review": 200,
        "finance.dashboard": 200,
        "finance.film_money_page": 200,
        "finance.reconciliation_page": 200,
        "mail_admin.failed": 200,
        "jobs_admin.overview": 200,
    },
    "fan": {
        "accounts.my_account": 200,
        "accounts.home": "/portfolio",
        "funding.checkout": 200,
        "funding.order_page": 200,
        "funding.portfolio_page": 200,
        "rewards.my_tickets": 200,
        "rewards.ticket_page": 200,
        "rewards.ticket_qr": 200,
        "rewards.ticket_pdf": 200,
        "payouts.statements": 200,
        "payouts.statement": 404,
        "payouts.statement_pdf": 404,
        "payout_details.bank_account": 200,
    },
    "finance": {
        "accounts.my_account": 200,
        "accounts.home": "/finance/",
        "finance.dashboard": 200,
        "finance.film_money_page": 200,
        "finance.reconciliation_page": 200,
        "payouts.report_file": 404,
        "payouts.finance_reports": 200,
        "payouts.finance_report": 404,
        "payouts.finance_run": 404,
        "payouts.export_csv": 404,
        "payouts.export_xlsx": 404,
        "payouts.ledger_export": 200,
    },
    "studio": {
        "accounts.my_account": 200,
        "accounts.home": "/studio/",
        "studio.dashboard": 200,
        "studio.new_film": 200,
        "studio.film_detail": 200,
        "studio.backers_csv": 200,
        "studio.edit_film": 200,
        "rewards.check_in": 200,
        "payouts.studio_reports": 200,
        "payouts.report_file": 404,
    },
}


def _protected_rules(app: Flask) -> list[tuple[str, str, tuple[str, ...]]]:
    rules = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        view = app.view_functions[rule.endpoint]
        roles = getattr(view, "required_roles", None)
        assert roles is not None, f"{rule.endpoint} ({rule.rule}) is neither public nor protected"
        method = "GET" if "GET" in rule.methods else "POST"
        rules.append((rule.endpoint, method, roles))
    return rules


def _url(app: Flask, endpoint: str, ids: dict[str, object]) -> str:
    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint)
    values = {arg: ids[arg] for arg in rule.arguments}
    with app.test_request_context():
        from flask import url_for

        return url_for(endpoint, **values)


@pytest.fixture
def world(db: Session) -> dict[str, object]:
    studio = make_studio_user(db, "Access Studio")
    film = make_film(db, studio, FilmState.DRAFT)
    users = {
        "fan": make_user(db, roles=(Role.FAN,)),
        "studio": studio,
        "finance": make_user(db, roles=(Role.FINANCE,)),
        "admin": make_user(db, roles=(Role.ADMIN,)),
    }
    # The fan's own hold and ticket, and a screening of the studio's film: their pages open.
    open_film = make_film(db, studio, FilmState.FUNDING, title="Access Open Film")
    order = hold(db, users["fan"], open_film, 1)
    ticket = give_ticket(db, open_film, users["fan"])
    screening = add_screening(db, open_film)
    ids = {
        "film_id": film.id,
        "user_id": users["fan"].id,
        "slug": film.slug,
        "reference": order.reference,
        "ticket_id": ticket.id,
        "screening_id": screening.id,
    }
    ids.update(
        {
            name: NO_SUCH_ID
            for name in ("statement_id", "report_id", "run_id", "tier_id", "email_id", "task_id")
        }
    )
    return {"users": users, "ids": ids}


def test_every_route_is_public_or_protected(app: Flask) -> None:
    assert _protected_rules(app)


def test_anonymous_users_are_sent_to_log_in(app: Flask, client: Client, world: dict) -> None:
    for endpoint, method, _roles in _protected_rules(app):
        url = _url(app, endpoint, world["ids"])
        response = client.get(url) if method == "GET" else client.post_form(url)
        assert response.status_code == 302, endpoint
        assert response.headers["Location"].startswith("/login"), endpoint


@pytest.mark.parametrize("kind", sorted(ALL_ROLES))
def test_users_without_the_role_get_403(app: Flask, client: Client, world: dict, kind: str) -> None:
    client.login(world["users"][kind].email, PASSWORD)
    checked = 0
    for endpoint, method, roles in _protected_rules(app):
        if not roles or kind in roles:
            continue
        url = _url(app, endpoint, world["ids"])
        response = client.get(url) if method == "GET" else client.post_form(url)
        assert response.status_code == 403, f"{kind} reached {endpoint}"
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("kind", sorted(ALL_ROLES))
def test_users_with_the_role_get_their_pages(app: Flask, client: Client, world: dict, kind: str) -> None:
    client.login(world["users"][kind].email, PASSWORD)
    got: dict[str, int | str] = {}
    for endpoint, method, roles in _protected_rules(app):
        if method != "GET" or (roles and kind not in roles):
            continue
        response = client.get(_url(app, endpoint, world["ids"]))
        response.get_data()  # run streamed bodies to the end, as a server would
        response.close()
        got[endpoint] = response.headers["Location"] if response.status_code == 302 else response.status_code
    assert got == EXPECTED_PAGES[kind]

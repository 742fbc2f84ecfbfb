"""E-mail never fails a payment or a batch job, leaves only after the request,
and admins see what could not be sent (issue 12, items 1, 8 and 17)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select, update

from crowdfund import ledger
from crowdfund.accounts.models import Role
from crowdfund.dev.localstripe_server import confirm_card_setup
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.ledger import Account
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, Client, MailCapture
from tests.factories import GOOD_CARD, PASSWORD, buy, hold, make_film, make_studio_user, make_user
from tests.http.test_buying import checkout_secret, hold_via_form
from tests.http.test_webhooks import event, post

#: Titles stored before titles were validated: each breaks an e-mail Subject header.
HEADER_BREAKING_TITLES = ["Night\nFerry", "Night\u2028Ferry"]


def set_legacy_title(db: CheckSession, film: Film, title: str) -> None:
    """Straight into the database, as old data would be (the forms now refuse it)."""
    db.execute(update(Film).where(Film.id == film.id).values(title=title))
    db.commit()
    db.expire_all()


def email_rows(db: CheckSession):  # type: ignore[no-untyped-def]
    from crowdfund.mail.outbox import OutgoingEmail

    db.reread()
    return {row.key: row for row in db.scalars(select(OutgoingEmail))}


def log_in_admin(db: CheckSession, client: Client) -> None:
    admin = make_user(db, "admin@example.com", roles=(Role.ADMIN,))
    client.login(admin.email, PASSWORD)


@pytest.mark.parametrize("title", HEADER_BREAKING_TITLES)
def test_a_title_that_breaks_email_headers_never_fails_paying(
    client: Client, other_client: Client, db: CheckSession, app: Flask, mail: MailCapture, title: str
) -> None:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=20,
        per_backer_limit=5,
        funding_goal_cents=50_000,
    )
    set_legacy_title(db, film, title)
    fan = make_user(db, "buyer@example.com", name="Bo Buyer")
    client.login(fan.email, PASSWORD)
    held, _ = hold_via_form(client, film, 2)
    checkout = held.headers["Location"]
    setup = confirm_card_setup(
        app.config["STRIPE_API_BASE"],
        app.config["STRIPE_PUBLISHABLE_KEY"],
        checkout_secret(client, checkout),
        GOOD_CARD,
    )
    paid = client.post_form(checkout.replace("/checkout", "/pay"), {"setup_intent": setup["id"]})
    # Before the fix: a 500 after the charge succeeded (money taken, no stake).
    assert paid.status_code == 303, paid.get_data(as_text=True)[:300]
    db.reread()
    order = db.scalar(select(Order).where(Order.film_id == film.id))
    assert paid.headers["Location"].endswith(f"/orders/{order.reference}")
    assert order.status == OrderStatus.PAID and ledger.has_entry(db, f"payment:{order.id}")
    assert "Paid" in client.get(paid.headers["Location"]).get_data(as_text=True)

    log_in_admin(db, other_client)
    page = other_client.get("/admin/mail")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "buyer@example.com" in html and order.reference in html and "Header values may not contain" in html
    receipt = email_rows(db)[f"receipt:{order.id}"]
    assert receipt.status == "failed" and receipt.last_error

    # Stripe's webhook for the same payment is answered (not a 500 it retries forever).
    payload = event(
        "evt_bad_title",
        "payment_intent.succeeded",
        order.stripe_payment_intent_id,
        "succeeded",
        {"order_id": str(order.id)},
    )
    assert post(client, payload).status_code == 200
    assert mail.messages == []


def charged_but_unrecorded(db: CheckSession, app: Flask, user, film: Film) -> Order:  # type: ignore[no-untyped-def]
    """Stripe charged the card; the server died before recording the outcome."""
    order = hold(db, user, film, 1)
    gateway = app_services(app).gateway
    setup = gateway.create_setup_intent({})
    confirm_card_setup(
        app.config["STRIPE_API_BASE"], app.config["STRIPE_PUBLISHABLE_KEY"], setup.client_secret, GOOD_CARD
    )
    method = gateway.retrieve_setup_intent(setup.id)
    intent_id = gateway.create_payment_intent(
        order.amount_cents, "usd", {"order_id": str(order.id)}, payment_method_id=method
    )
    order.stripe_payment_intent_id = intent_id
    db.commit()
    gateway.confirm_payment_intent(intent_id, method)
    return order


@pytest.mark.parametrize("title", HEADER_BREAKING_TITLES)
def test_batch_jobs_finish_and_refund_with_a_title_that_breaks_email_headers(
    db: CheckSession, app: Flask, mail: MailCapture, clock, title: str
) -> None:  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    bad = make_film(
        db, studio, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=40_000
    )
    good = make_film(
        db, studio, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=40_000
    )
    fans = [make_user(db, f"backer{n}@example.com") for n in range(2)]
    buy(db, app, fans[0], bad, 2)
    buy(db, app, fans[1], good, 1)
    unrecorded = charged_but_unrecorded(db, app, fans[1], bad)
    set_legacy_title(db, bad, title)
    runner = app.test_cli_runner()

    reconciled = runner.invoke(args=["payments", "reconcile"])
    assert reconciled.exit_code == 0, reconciled.output
    db.reread()
    assert db.get(Order, unrecorded.id).status == OrderStatus.PAID

    clock.set(bad.deadline + timedelta(minutes=app.config["HOLD_MINUTES"], seconds=1))
    closed = runner.invoke(args=["funding", "close-rounds"])
    assert closed.exit_code == 0, closed.output
    db.reread()
    assert db.get(Film, bad.id).state == FilmState.FAILED and db.get(Film, good.id).state == FilmState.FAILED
    orders = db.scalars(select(Order).where(Order.film_id.in_((bad.id, good.id)))).all()
    assert len(orders) == 3
    assert {(o.status, o.refund_state) for o in orders} == {(OrderStatus.REFUNDED, "done")}
    assert (
        ledger.balance(db, Account.escrow(bad.id)) == 0 and ledger.balance(db, Account.escrow(good.id)) == 0
    )
    assert ledger.trial_balance(db) == 0

    rows = email_rows(db)
    assert rows[f"receipt:{unrecorded.id}"].status == "failed"
    assert rows[f"round-failed:{bad.id}:{fans[0].id}"].status == "failed"
    assert rows[f"round-failed:{bad.id}:{fans[1].id}"].status == "failed"
    assert [m["Subject"] for m in mail.to(fans[1].email) if "did not reach its goal" in m["Subject"]] == [
        f"{good.title} did not reach its goal: you are refunded in full"
    ]
    assert email_rows(db)[f"round-failed:{good.id}:{fans[1].id}"].status == "sent"


def test_forgot_password_makes_no_smtp_connection_inside_the_request(
    client: Client, db: CheckSession, mail: MailCapture
) -> None:
    make_user(db, "lost@example.com")
    response = client.post_form("/forgot-password", {"email": "lost@example.com"})
    assert response.status_code == 303
    # Before the fix the mail was sent inside the request (twice as slow for an existing account).
    assert mail.received == []
    (row,) = email_rows(db).values()
    assert row.status == "pending" and row.to_address == "lost@example.com"
    assert len(mail.to("lost@example.com")) == 1
    assert email_rows(db)[row.key].status == "sent"


def test_failed_mail_page_is_admin_only_and_retry_needs_csrf(
    client: Client, other_client: Client, db: CheckSession, app: Flask, mail: MailCapture
) -> None:
    from crowdfund.mail.outbox import OutgoingEmail, queue_email

    queue_email(
        db,
        key="t:unbuildable",
        to="unbuildable@example.com",
        template="statement_ready",
        number="S-1",
        amount_cents=100,
        name="Fan",
        film_title="Bad\rTitle",
        statement_id=1,
    )
    queue_email(
        db,
        key="t:undelivered",
        to="undelivered@example.com",
        template="password_reset",
        name="Pat",
        link="http://127.0.0.1:5000/reset-password/x",
        minutes=60,
    )
    db.commit()
    db.execute(
        update(OutgoingEmail)
        .where(OutgoingEmail.key == "t:undelivered")
        .values(status="failed", attempts=5, last_error="SMTP said no", next_attempt_at=None)
    )
    db.commit()
    undelivered = email_rows(db)["t:undelivered"]
    unbuildable = email_rows(db)["t:unbuildable"]

    assert client.get("/admin/mail").status_code == 302  # log in first
    fan = make_user(db, "fan@example.com")
    client.login(fan.email, PASSWORD)
    assert client.get("/admin/mail").status_code == 403
    assert client.post_form(f"/admin/mail/{undelivered.id}/retry").status_code == 403

    log_in_admin(db, other_client)
    dashboard = other_client.get("/admin/").get_data(as_text=True)
    assert "2 failed e-mails" in dashboard and "/admin/mail" in dashboard
    html = other_client.get("/admin/mail").get_data(as_text=True)
    assert "undelivered@example.com" in html and "SMTP said no" in html
    assert "unbuildable@example.com" in html and "Reset your Reelshare password" in html
    assert f"/admin/mail/{undelivered.id}/retry" in html
    assert f"/admin/mail/{unbuildable.id}/retry" not in html  # nothing to send: it could not be built
    assert other_client.post(f"/admin/mail/{undelivered.id}/retry").status_code == 400  # no CSRF token
    assert email_rows(db)["t:undelivered"].status == "failed"
    assert other_client.post_form(f"/admin/mail/{unbuildable.id}/retry").status_code == 409
    retried = other_client.post_form(f"/admin/mail/{undelivered.id}/retry")
    assert retried.status_code == 303 and retried.headers["Location"].endswith("/admin/mail")
    assert email_rows(db)["t:undelivered"].status == "pending"
    assert len(mail.to("undelivered@example.com")) == 1
    assert email_rows(db)["t:undelivered"].status == "sent"
    assert other_client.post_form("/admin/mail/999999/retry").status_code == 404

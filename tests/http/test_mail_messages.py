"""The e-mails users get (issue 14, point 2): each queued by the real action,
sent once however often the action is repeated, with times in the
recipient's time zone and an absolute link back to the page it talks about."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import EmailMessage
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import event, select, update

from crowdfund.accounts.models import Role, User
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.mail.outbox import OutgoingEmail
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, Client, MailCapture
from tests.factories import PASSWORD, buy, make_film, make_studio_user, make_user

TOKYO = "Asia/Tokyo"


def in_zone(moment: datetime, zone: str) -> str:
    """How an e-mail shows `moment` to someone in `zone`."""
    shown = moment.astimezone(ZoneInfo(zone))
    return f"{shown:%d %b %Y, %H:%M} {shown.tzname()} ({zone})"


def set_zone(db: CheckSession, user: User, zone: str | None) -> None:
    db.get(User, user.id).time_zone = zone  # type: ignore[union-attr]
    db.commit()


def only(mail: MailCapture, to: str, subject: str) -> EmailMessage:
    """The one message to `to` whose Subject has `subject` (never two)."""
    found = [m for m in mail.to(to) if subject in m["Subject"]]
    assert len(found) == 1, [m["Subject"] for m in mail.to(to)]
    return found[0]


def links(app: Flask, message: EmailMessage) -> list[str]:
    """The message's links to the site, as paths (each checked absolute, on PUBLIC_URL)."""
    found = re.findall(r"https?://\S+", message.get_content())
    assert found and all(link.startswith(app.config["PUBLIC_URL"] + "/") for link in found), found
    return [urlsplit(link).path for link in found]


# --- the recipient's time zone, on the account page -------------------------------------------


def test_the_account_page_sets_the_time_zone_and_refuses_an_unknown_one(
    client: Client, db: CheckSession
) -> None:
    fan = make_user(db, "zoned@example.com")
    client.login(fan.email, PASSWORD)
    page = client.get("/account").get_data(as_text=True)
    assert "Time zone" in page and 'value="Asia/Tokyo"' in page  # offered in the list
    saved = client.post_form("/account/time-zone", {"time_zone": TOKYO})
    assert saved.status_code == 303 and saved.headers["Location"] == "/account"
    assert f"now shown in {TOKYO}" in client.get("/account").get_data(as_text=True)
    db.reread()
    assert db.get(User, fan.id).time_zone == TOKYO

    for bad in ("Mars/Olympus_Mons", "../../etc/passwd", "x" * 65):
        refused = client.post_form("/account/time-zone", {"time_zone": bad})
        text = refused.get_data(as_text=True)
        # The account page again, with the field's message; not an error page.
        assert refused.status_code == 400 and "Your account" in text and "Save the time zone" in text
        assert "not a time zone we know" in text or "at most 64 characters" in text, bad
        db.reread()
        assert db.get(User, fan.id).time_zone == TOKYO  # nothing saved

    assert client.post_form("/account/time-zone", {"time_zone": ""}).status_code == 303
    db.reread()
    assert db.get(User, fan.id).time_zone is None  # UTC


def test_the_receipt_shows_times_in_the_backers_zone_and_links_to_the_order(
    db: CheckSession, app: Flask, mail: MailCapture, film: Film
) -> None:
    fan = make_user(db, "tokyo@example.com")
    set_zone(db, fan, TOKYO)
    order = buy(db, app, fan, film, 2)
    receipt = only(mail, fan.email, "Your receipt")
    body = receipt.get_content()
    assert in_zone(film.deadline, TOKYO) in body and in_zone(order.paid_at, TOKYO) in body
    assert "UTC" not in body
    assert f"/orders/{order.reference}" in links(app, receipt)
    assert f"/films/{film.slug}" in links(app, receipt)

    # Without a zone: UTC, said so.
    other = make_user(db, "utc@example.com")
    buy(db, app, other, film, 1)
    assert f"{film.deadline:%d %b %Y, %H:%M} UTC" in only(mail, other.email, "Your receipt").get_content()


# --- a backer cancels a paid order ---------------------------------------------------------------


def test_cancelling_an_order_confirms_it_once_with_the_refund_and_the_order_link(
    client: Client, db: CheckSession, app: Flask, mail: MailCapture, film: Film
) -> None:
    fan = make_user(db, "canceller@example.com", name="Cas")
    set_zone(db, fan, "America/New_York")
    order = buy(db, app, fan, film, 2)
    client.login(fan.email, PASSWORD)
    for _ in range(2):  # a double click
        assert client.post_form(f"/orders/{order.reference}/cancel").status_code == 303
    message = only(mail, fan.email, "is cancelled")
    assert order.reference in message["Subject"]
    body = message.get_content()
    db.reread()
    cancelled = db.get(Order, order.id)
    assert "$100.00" in body and "requested: it is on its way" in body
    assert in_zone(cancelled.closed_at, "America/New_York") in body
    paths = links(app, message)
    assert f"/orders/{order.reference}" in paths
    assert client.get(paths[0]).status_code == 200  # the link is a real page, the backer's


def test_a_refused_cancellation_sends_nothing(
    client: Client, db: CheckSession, app: Flask, mail: MailCapture, film: Film
) -> None:
    fan = make_user(db, "late@example.com")
    order = buy(db, app, fan, film, 1)
    # The cancellation window closed: the request fails, its transaction rolls back.
    db.execute(update(Film).where(Film.id == film.id).values(deadline=datetime.now(UTC)))
    db.commit()
    client.login(fan.email, PASSWORD)
    client.post_form(f"/orders/{order.reference}/cancel")
    assert [m for m in mail.to(fan.email) if "is cancelled" in m["Subject"]] == []


def test_a_cancellation_that_fails_after_queueing_its_mail_sends_nothing(
    client: Client,
    db: CheckSession,
    app: Flask,
    mail: MailCapture,
    film: Film,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fan = make_user(db, "unlucky@example.com")
    order = buy(db, app, fan, film, 1)
    client.login(fan.email, PASSWORD)
    seen: list[str] = []

    # The fault: the database refuses the refund's outbox row, written after the e-mail's.
    def refuse_the_refund_row(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement.lstrip().upper())
        if seen[-1].startswith("INSERT INTO OUTBOX_TASKS"):
            raise RuntimeError("injected fault")

    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    engine = app_services(app).engine
    event.listen(engine, "before_cursor_execute", refuse_the_refund_row)
    try:
        response = client.post_form(f"/orders/{order.reference}/cancel")
    finally:
        event.remove(engine, "before_cursor_execute", refuse_the_refund_row)
    assert response.status_code == 500
    assert any(
        s.startswith("INSERT INTO EMAILS") for s in seen
    )  # the mail was queued, then the request failed
    db.reread()
    assert db.get(Order, order.id).status == OrderStatus.PAID
    assert db.scalars(select(OutgoingEmail.key)).all() == [f"receipt:{order.id}"]
    assert [m for m in mail.to(fan.email) if "is cancelled" in m["Subject"]] == []
    # Tried again, it goes through: one e-mail.
    assert client.post_form(f"/orders/{order.reference}/cancel").status_code == 303
    assert only(mail, fan.email, "is cancelled")


# --- the studio's review --------------------------------------------------------------------------


def review(client: Client, film: Film, action: str, note: str = "") -> int:
    prefix = "approve" if action == "approve" else "back"
    data = {f"{prefix}-csrf_token": client.csrf_token()}
    if note:
        data["back-reason"] = note
    return client.post_form(f"/admin/reviews/{film.id}/{action}", data).status_code


def test_every_studio_member_is_told_once_that_the_film_is_approved(
    client: Client, other_client: Client, db: CheckSession, app: Flask, mail: MailCapture
) -> None:
    owner = make_studio_user(db, "Harbour Pictures", email="owner@harbour.example")
    partner = make_studio_user(db, "Harbour Pictures", email="partner@harbour.example")
    outsider = make_studio_user(db, "Other Pictures", email="outsider@other.example")
    set_zone(db, partner, TOKYO)
    film = make_film(db, owner, FilmState.IN_REVIEW, title="Harbour Lights")
    admin = make_user(db, roles=(Role.ADMIN,))
    other_client.login(admin.email, PASSWORD)
    assert review(other_client, film, "approve") == 303
    assert review(other_client, film, "approve") == 303  # again: refused (not in review), nothing sent
    for member, zone in ((owner, None), (partner, TOKYO)):
        message = only(mail, member.email, "is approved")
        body = message.get_content()
        assert "Harbour Lights" in message["Subject"]
        expected = in_zone(film.deadline, zone) if zone else f"{film.deadline:%d %b %Y, %H:%M} UTC"
        assert expected in body
        assert f"/studio/films/{film.id}" in links(app, message)
    assert mail.to(outsider.email) == []
    client.login(owner.email, PASSWORD)
    assert client.get(f"/studio/films/{film.id}").status_code == 200


def test_a_film_sent_back_tells_the_studio_the_note_once_per_review(
    client: Client, other_client: Client, db: CheckSession, app: Flask, mail: MailCapture
) -> None:
    owner = make_studio_user(db, "Back Pictures", email="back@studio.example")
    set_zone(db, owner, TOKYO)
    film = make_film(db, owner, FilmState.IN_REVIEW)
    admin = make_user(db, roles=(Role.ADMIN,))
    other_client.login(admin.email, PASSWORD)
    assert review(other_client, film, "send-back", "The poster is blurry.") == 303
    assert review(other_client, film, "send-back", "The poster is blurry.") == 400  # refused now
    message = only(mail, owner.email, "sent back")
    body = message.get_content()
    db.reread()
    assert "The poster is blurry." in body
    assert in_zone(db.get(Film, film.id).submitted_at, TOKYO) in body
    assert links(app, message) == [f"/studio/films/{film.id}"]

    # Submitted again and sent back again: a new review, a new e-mail.
    client.login(owner.email, PASSWORD)
    assert client.post_form(f"/studio/films/{film.id}/submit").status_code == 303
    assert review(other_client, film, "send-back", "Still blurry.") == 303
    notes = [m.get_content() for m in mail.to(owner.email) if "sent back" in m["Subject"]]
    assert len(notes) == 2 and "Still blurry." in notes[1]


# --- signing up, and passwords ------------------------------------------------------------------


def test_sign_up_sends_one_welcome_with_the_verify_link_and_resending_still_works(
    client: Client, db: CheckSession, app: Flask, mail: MailCapture
) -> None:
    form = {"display_name": "Wen", "email": "wen@example.com", "password": PASSWORD, "confirm": PASSWORD}
    assert client.post_form("/signup", form).status_code == 303
    assert client.post_form("/signup", form).status_code == 303  # again: the owner is told, no 2nd welcome
    welcome = only(mail, "wen@example.com", "Welcome to Reelshare")
    paths = links(app, welcome)
    assert paths[0].startswith("/verify-email/") and "/account" in paths
    assert "UTC" in welcome.get_content()  # when the link expires, in the (default) zone
    assert len(mail.to("wen@example.com")) == 2  # the welcome, then "someone tried to sign up"

    client.login("wen@example.com", PASSWORD)
    assert client.post_form("/account/verify-email").status_code == 303
    resent = only(mail, "wen@example.com", "Confirm your e-mail address for Reelshare")
    assert links(app, resent)[0].startswith("/verify-email/")
    assert client.get(links(app, resent)[0]).status_code == 303  # confirmed
    db.reread()
    assert db.scalar(select(User).where(User.email == "wen@example.com")).email_verified


def test_a_password_reset_is_confirmed_once_with_a_link_to_reset_again(
    client: Client, db: CheckSession, app: Flask, mail: MailCapture
) -> None:
    user = make_user(db, "reset@example.com", name="Rey")
    set_zone(db, user, "Europe/Paris")
    assert client.post_form("/forgot-password", {"email": user.email}).status_code == 303
    reset_link = re.search(r"https?://\S+/reset-password/\S+", mail.to(user.email)[-1].get_content())
    assert reset_link is not None
    path = urlsplit(reset_link.group(0)).path
    new = {"password": "a brand new passphrase", "confirm": "a brand new passphrase"}
    assert client.post_form(path, new).status_code == 303
    assert client.post_form(path, new).status_code == 400  # the link works once: no second e-mail
    message = only(mail, user.email, "password was changed")
    body = message.get_content()
    assert "(Europe/Paris)" in body and re.search(r"CES?T \(Europe/Paris\)", body)
    assert "/forgot-password" in links(app, message)
    assert client.get("/forgot-password").status_code == 200

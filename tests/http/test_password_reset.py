"""Password reset by e-mailed link (time-limited, single use, invalidated by a
password change, silent about which e-mails exist) and session renewal at
log-in and at role change."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import select

from crowdfund.accounts.models import Role, User
from tests.conftest import CheckSession, Client, MailCapture
from tests.factories import PASSWORD, make_studio_user, make_user

NEW_PASSWORD = "a brand new passphrase"
LINK = re.compile(r"(https?://\S+/reset-password/\S+)")


def ask_for_link(client: Client, mail: MailCapture, email: str, **kwargs: object) -> str:
    to = email.strip().lower()
    before = len(mail.to(to))
    response = client.post_form("/forgot-password", {"email": email}, **kwargs)
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    messages = mail.to(to)
    assert len(messages) == before + 1
    link = LINK.search(messages[-1].get_content()).group(1)  # type: ignore[union-attr]
    return link


def path_of(link: str) -> str:
    return urlsplit(link).path


def choose_password(client: Client, link: str, password: str = NEW_PASSWORD):  # type: ignore[no-untyped-def]
    return client.post_form(path_of(link), {"password": password, "confirm": password})


def test_forgot_reset_and_log_in_with_the_new_password(
    client: Client, db: CheckSession, mail: MailCapture, app: Flask
) -> None:
    make_user(db, "lost@example.com", name="Lou")
    assert "Forgot your password?" in client.get("/login").get_data(as_text=True)
    link = ask_for_link(client, mail, "Lost@Example.com")
    message = mail.to("lost@example.com")[-1]
    assert message["Subject"] == "Reset your Reelshare password" and "Hello Lou" in message.get_content()
    assert link.startswith(app.config["PUBLIC_URL"] + "/reset-password/")

    page = client.get(path_of(link))
    assert page.status_code == 200 and "Choose a new password" in page.get_data(as_text=True)
    done = choose_password(client, link)
    assert done.status_code == 303 and done.headers["Location"] == "/login"
    assert "Your password is changed" in client.get("/login").get_data(as_text=True)

    old = client.post_form("/login", {"email": "lost@example.com", "password": PASSWORD})
    assert old.status_code == 400
    client.login("lost@example.com", NEW_PASSWORD)
    assert client.get("/account").status_code == 200


def test_a_link_works_once(client: Client, db: CheckSession, mail: MailCapture) -> None:
    make_user(db, "once@example.com")
    link = ask_for_link(client, mail, "once@example.com")
    assert choose_password(client, link).status_code == 303
    again = choose_password(client, link, "yet another passphrase")
    assert again.status_code == 400
    assert "invalid or has already been used" in again.get_data(as_text=True)
    assert client.get(path_of(link)).status_code == 400
    client.login("once@example.com", NEW_PASSWORD)  # the second attempt changed nothing


def test_a_link_expires(client: Client, db: CheckSession, mail: MailCapture, clock, app: Flask) -> None:  # type: ignore[no-untyped-def]
    make_user(db, "slow@example.com")
    start = datetime.now(UTC).replace(microsecond=0)
    clock.set(start)
    link = ask_for_link(client, mail, "slow@example.com")
    max_age = app.config["PASSWORD_RESET_MAX_AGE_SECONDS"]
    clock.set(start + timedelta(seconds=max_age - 5))
    assert client.get(path_of(link)).status_code == 200
    clock.set(start + timedelta(seconds=max_age + 5))
    expired = choose_password(client, link)
    assert expired.status_code == 400 and "has expired" in expired.get_data(as_text=True)
    client.login("slow@example.com", PASSWORD)  # unchanged


def test_a_password_change_invalidates_older_links(
    client: Client, db: CheckSession, mail: MailCapture, clock
) -> None:  # type: ignore[no-untyped-def]
    make_user(db, "twice@example.com")
    start = datetime.now(UTC)
    clock.set(start)
    first = ask_for_link(client, mail, "twice@example.com")
    clock.set(start + timedelta(seconds=2))
    second = ask_for_link(client, mail, "twice@example.com")
    assert first != second
    assert choose_password(client, second).status_code == 303
    # The older link was still unused, but the password it would replace is gone.
    stale = choose_password(client, first, "attacker chosen pass")
    assert stale.status_code == 400 and "invalid or has already been used" in stale.get_data(as_text=True)
    client.login("twice@example.com", NEW_PASSWORD)


def test_a_tampered_or_foreign_token_is_refused(client: Client, db: CheckSession, mail: MailCapture) -> None:
    victim = make_user(db, "victim@example.com")
    make_user(db, "attacker@example.com")
    link = ask_for_link(client, mail, "attacker@example.com")
    token = path_of(link).rsplit("/", 1)[1]
    payload, _, signature = token.partition(".")
    # Swap the user id inside the payload: the signature no longer matches.
    padded = payload + "=" * (-len(payload) % 4)
    data = json.loads(base64.urlsafe_b64decode(padded))
    data["u"] = victim.id
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=") + "." + signature
    for bad in (forged, "nonsense", token[:-3] + "abc"):
        response = client.post_form(
            f"/reset-password/{bad}", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
        )
        assert response.status_code == 400 and "invalid" in response.get_data(as_text=True)
    client.login("victim@example.com", PASSWORD)


def test_the_answer_does_not_reveal_whether_an_account_exists(
    client: Client, db: CheckSession, mail: MailCapture
) -> None:
    make_user(db, "exists@example.com")
    answers = []
    for email in ("exists@example.com", "missing@example.com"):
        response = client.post_form("/forgot-password", {"email": email})
        answers.append(
            (
                response.status_code,
                response.headers["Location"],
                client.get(response.headers["Location"]).get_data(as_text=True),
            )
        )
    (status_a, where_a, page_a), (status_b, where_b, page_b) = answers
    assert (status_a, where_a) == (status_b, where_b) == (303, "/login")
    strip = re.compile(r'name="csrf_token"[^>]*>')
    assert strip.sub("", page_a) == strip.sub("", page_b)
    assert "If an account uses that address" in page_a
    assert len(mail.to("exists@example.com")) == 1 and mail.to("missing@example.com") == []


def test_reset_form_errors_keep_the_link_usable(client: Client, db: CheckSession, mail: MailCapture) -> None:
    make_user(db, "picky@example.com")
    link = ask_for_link(client, mail, "picky@example.com")
    short = choose_password(client, link, "short")
    assert short.status_code == 400 and "at least 10" in short.get_data(as_text=True)
    differ = client.post_form(path_of(link), {"password": NEW_PASSWORD, "confirm": "something else"})
    assert differ.status_code == 400 and "differ" in differ.get_data(as_text=True)
    assert choose_password(client, link).status_code == 303


def test_link_uses_public_url_not_the_host_header(
    client: Client, db: CheckSession, mail: MailCapture, app: Flask
) -> None:
    make_user(db, "hosted@example.com")
    evil = "http://evil.example"
    page = client.get("/forgot-password", base_url=evil).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    response = client.post(
        "/forgot-password", data={"email": "hosted@example.com", "csrf_token": token}, base_url=evil
    )
    assert response.status_code == 303
    link = LINK.search(mail.to("hosted@example.com")[-1].get_content()).group(1)  # type: ignore[union-attr]
    assert "evil.example" not in link and link.startswith(app.config["PUBLIC_URL"] + "/reset-password/")


def test_reset_logs_out_every_other_session(
    client: Client, other_client: Client, db: CheckSession, mail: MailCapture
) -> None:
    make_user(db, "shared@example.com")
    other_client.login("shared@example.com", PASSWORD)
    assert other_client.get("/account").status_code == 200
    link = ask_for_link(client, mail, "shared@example.com")
    assert choose_password(client, link).status_code == 303
    response = other_client.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_log_in_starts_a_new_session(client: Client, db: CheckSession) -> None:
    make_user(db, "fixated@example.com")
    client.get("/login")
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
        before = dict(session)
    client.login("fixated@example.com", PASSWORD)
    with client.session_transaction() as session:
        after = dict(session)
    assert "planted" not in after and "_user_id" in after
    assert after.get("csrf_token") != before.get("csrf_token")


def test_role_change_by_an_admin_ends_the_users_sessions(
    client: Client, other_client: Client, db: CheckSession
) -> None:
    fan = make_user(db, "promoted@example.com")
    make_user(db, "boss@example.com", roles=(Role.ADMIN,))
    client.login("promoted@example.com", PASSWORD)
    assert client.get("/portfolio").status_code == 200
    other_client.login("boss@example.com", PASSWORD)
    granted = other_client.post_form(f"/admin/users/{fan.id}/roles", {"role": "finance", "action": "grant"})
    assert granted.status_code == 303
    db.reread()
    assert db.scalar(select(User).where(User.id == fan.id)).role_names == {"fan", "finance"}
    response = client.get("/portfolio")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    # Logging in again gives a session with the new role.
    client.login("promoted@example.com", PASSWORD)
    assert client.get("/finance/").status_code == 200


def test_studio_membership_change_ends_the_users_sessions(
    client: Client, other_client: Client, db: CheckSession
) -> None:
    member = make_studio_user(db, "Old Studio", email="member@example.com")
    make_user(db, "boss2@example.com", roles=(Role.ADMIN,))
    client.login("member@example.com", PASSWORD)
    assert client.get("/studio/").status_code == 200
    other_client.login("boss2@example.com", PASSWORD)
    moved = other_client.post_form(
        f"/admin/users/{member.id}/studio",
        {"membership-studio_id": "0", "membership-csrf_token": other_client.csrf_token()},
    )
    assert moved.status_code == 303
    response = client.get("/studio/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]

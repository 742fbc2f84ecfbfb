"""Log-out ends sessions on the server; "keep me logged in" tokens are random,
expire 30 days after log-in and are replaced at each use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from crowdfund.accounts.models import RememberToken
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_user

SESSION, REMEMBER = "session", "remember"


def log_in(client: Client, email: str, remember: bool = True) -> None:
    data = {"email": email, "password": PASSWORD}
    if remember:
        data["remember"] = "y"
    response = client.post_form("/login", data)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]


def cookie(client: Client, name: str) -> str | None:
    found = client.get_cookie(name)
    return found.value if found is not None else None


def only_cookies(client: Client, **values: str | None) -> None:
    """Make the browser hold exactly these cookies (a copy an attacker kept, say)."""
    for name in (SESSION, REMEMBER):
        client.delete_cookie(name)
        if values.get(name):
            client.set_cookie(name, values[name])  # type: ignore[arg-type]


def is_logged_in(client: Client) -> bool:
    response = client.get("/account")
    if response.status_code == 200:
        return True
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    return False


def test_log_out_ends_the_session_and_the_remember_cookie_on_the_server(
    client: Client, db: CheckSession
) -> None:
    make_user(db, "leaver@example.com")
    log_in(client, "leaver@example.com")
    saved_session, saved_remember = cookie(client, SESSION), cookie(client, REMEMBER)
    assert saved_session and saved_remember and is_logged_in(client)
    client.post_form("/logout")
    assert not is_logged_in(client)
    # Replaying the cookies saved before log-out: each alone, and both together.
    for replay in (
        {SESSION: saved_session},
        {REMEMBER: saved_remember},
        {SESSION: saved_session, REMEMBER: saved_remember},
    ):
        only_cookies(client, **replay)
        assert not is_logged_in(client), replay
    db.reread()
    assert db.scalar(select(func.count()).select_from(RememberToken)) == 0


def test_remember_tokens_are_random_at_every_log_in(client: Client, db: CheckSession) -> None:
    make_user(db, "twice@example.com")
    tokens = []
    for _ in range(2):
        log_in(client, "twice@example.com")
        tokens.append(cookie(client, REMEMBER))
        only_cookies(client)  # a new browser
    assert tokens[0] and tokens[1] and tokens[0] != tokens[1]
    db.reread()
    stored = db.scalars(select(RememberToken.token_hash)).all()
    assert len(stored) == 2 and not any(t in s for t in tokens for s in stored if t)


def test_a_remember_cookie_logs_in_once_and_is_replaced(client: Client, db: CheckSession, clock) -> None:  # type: ignore[no-untyped-def]
    make_user(db, "back@example.com")
    start = datetime.now(UTC)
    clock.set(start)
    log_in(client, "back@example.com")
    first = cookie(client, REMEMBER)
    only_cookies(client, remember=first)  # the browser was closed: no session cookie
    assert is_logged_in(client)
    second = cookie(client, REMEMBER)
    assert second and second != first
    # The next browser session logs in with the new token...
    clock.set(start + timedelta(days=1))
    only_cookies(client, remember=second)
    assert is_logged_in(client)
    third = cookie(client, REMEMBER)
    assert third not in (first, second)
    # ...while the old one, replayed later, logs no one in; and since a replaced
    # token came back, it was copied: the current one is ended too.
    clock.set(start + timedelta(days=1, minutes=5))
    only_cookies(client, remember=first)
    assert not is_logged_in(client)
    only_cookies(client, remember=third)
    assert not is_logged_in(client)


def test_a_remember_token_ends_30_days_after_log_in(client: Client, db: CheckSession, clock) -> None:  # type: ignore[no-untyped-def]
    make_user(db, "month@example.com")
    start = datetime.now(UTC)
    clock.set(start)
    log_in(client, "month@example.com")
    token = cookie(client, REMEMBER)
    clock.set(start + timedelta(days=29, hours=23))
    only_cookies(client, remember=token)
    assert is_logged_in(client)
    # Rotated at that use, but the new token keeps the same end: 30 days after log-in.
    clock.set(start + timedelta(days=30, minutes=1))
    only_cookies(client, remember=cookie(client, REMEMBER))
    assert not is_logged_in(client)
    assert cookie(client, REMEMBER) is None  # and the browser is told to drop it


def test_log_out_everywhere_ends_every_other_browser(
    client: Client, other_client: Client, db: CheckSession
) -> None:
    make_user(db, "lost-phone@example.com")
    log_in(other_client, "lost-phone@example.com")  # the lost phone, kept logged in
    phone_remember = cookie(other_client, REMEMBER)
    log_in(client, "lost-phone@example.com", remember=False)
    assert "Log out everywhere" in client.get("/account").get_data(as_text=True)
    response = client.post_form("/account/logout-everywhere")
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert not is_logged_in(client)
    assert not is_logged_in(other_client)
    only_cookies(other_client, remember=phone_remember)
    assert not is_logged_in(other_client)
    # Logging in again works as before.
    log_in(client, "lost-phone@example.com")
    assert is_logged_in(client)


def test_a_password_reset_deletes_every_remember_token(client: Client, db: CheckSession) -> None:
    from crowdfund.accounts import tokens as account_tokens

    user = make_user(db, "reset@example.com")
    log_in(client, "reset@example.com")
    token = cookie(client, REMEMBER)
    now = datetime.now(UTC)
    reset = account_tokens.make_password_reset_token(
        user, secret_key=client.application.config["SECRET_KEY"], now=now
    )
    account_tokens.reset_password(
        db,
        reset,
        "a whole new passphrase",
        secret_key=client.application.config["SECRET_KEY"],
        now=now,
        max_age_seconds=3600,
    )
    db.commit()
    assert db.scalar(select(func.count()).select_from(RememberToken)) == 0
    only_cookies(client, remember=token)
    assert not is_logged_in(client)

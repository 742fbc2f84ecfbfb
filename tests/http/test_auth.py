import re
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdfund.accounts.models import Role, User
from tests.conftest import Client, MailCapture
from tests.factories import PASSWORD, make_studio_user, make_user

VERIFY_LINK = re.compile(r"(https?://\S+/verify-email/\S+)")


def verification_link(mail: MailCapture, email: str) -> str:
    messages = [m for m in mail.to(email) if "Confirm your e-mail" in m["Subject"]]
    assert messages, [m["Subject"] for m in mail.to(email)]
    return VERIFY_LINK.search(messages[-1].get_content()).group(1)  # type: ignore[union-attr]


def local(link: str) -> str:
    parts = urlsplit(link)
    return parts.path + ("?" + parts.query if parts.query else "")


def test_sign_up_confirm_the_address_log_in(
    client: Client, db: Session, mail: MailCapture, app: Flask
) -> None:
    page = client.get("/signup")
    assert page.status_code == 200 and b'name="csrf_token"' in page.data
    response = client.post_form(
        "/signup",
        {"display_name": "Nia", "email": "Nia@Example.com", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert "Check your e-mail" in client.get("/login").get_data(as_text=True)
    account = db.scalar(select(User).where(User.email == "nia@example.com"))
    assert account.role_names == {"fan"} and account.email_verified_at is None
    link = verification_link(mail, "nia@example.com")
    assert link.startswith(app.config["PUBLIC_URL"] + "/verify-email/")
    confirmed = client.get(local(link))
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/login"
    assert "Your e-mail address is confirmed" in client.get("/login").get_data(as_text=True)
    db.reread()
    assert db.get(User, account.id).email_verified_at is not None
    client.login("NIA@example.com", PASSWORD)
    assert b"Nia" in client.get("/account").data
    client.post_form("/logout")
    assert b"Log in" in client.get("/").data


def test_sign_up_errors_come_back_on_the_form(client: Client, db: Session) -> None:
    make_user(db, "taken@example.com")
    cases = [
        ({"display_name": "A", "email": "bad", "password": PASSWORD, "confirm": PASSWORD}, "valid e-mail"),
        (
            {"display_name": "A", "email": "a@example.com", "password": "short", "confirm": "short"},
            "at least 10",
        ),
        ({"display_name": "A", "email": "a@example.com", "password": PASSWORD, "confirm": "other"}, "differ"),
        ({"email": "a@example.com"}, "Enter your name"),
    ]
    for data, message in cases:
        response = client.post_form("/signup", data)
        assert response.status_code == 400
        assert message in response.get_data(as_text=True)
    assert db.scalar(select(User).where(User.email == "a@example.com")) is None


def test_login_does_not_say_which_part_is_wrong(client: Client, db: Session) -> None:
    make_user(db, "known@example.com")
    wrong_password = client.post_form(
        "/login", {"email": "known@example.com", "password": "not the password"}
    )
    unknown = client.post_form("/login", {"email": "nobody@example.com", "password": "not the password"})
    assert wrong_password.status_code == unknown.status_code == 400
    message = "That e-mail and password do not match an account."
    assert message in wrong_password.get_data(as_text=True) and message in unknown.get_data(as_text=True)


def test_post_without_csrf_token_is_refused(client: Client, db: Session) -> None:
    make_user(db, "csrf@example.com")
    response = client.post("/login", data={"email": "csrf@example.com", "password": PASSWORD})
    assert response.status_code == 400
    assert b"Form expired" in response.data


def test_login_redirects_only_to_local_next(client: Client, db: Session) -> None:
    make_user(db, "next@example.com")
    token = client.csrf_token()
    response = client.post(
        "/login?next=//evil.example/x",
        data={"email": "next@example.com", "password": PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/portfolio"
    client.post_form("/logout")
    token = client.csrf_token()
    response = client.post(
        "/login?next=/studio/", data={"email": "next@example.com", "password": PASSWORD, "csrf_token": token}
    )
    assert response.headers["Location"] == "/studio/"


def test_each_kind_of_user_lands_on_their_home(client: Client, db: Session) -> None:
    homes = {
        make_user(db, roles=(Role.FAN,)).email: "/portfolio",
        make_studio_user(db).email: "/studio/",
        make_user(db, roles=(Role.FINANCE,)).email: "/finance/",
        make_user(db, roles=(Role.ADMIN,)).email: "/admin/",
    }
    for email, home in homes.items():
        response = client.post_form("/login", {"email": email, "password": PASSWORD})
        assert response.headers["Location"] == home
        assert client.get(home).status_code == 200
        client.post_form("/logout")


def test_role_change_ends_old_sessions(client: Client, db: Session, app: Flask) -> None:
    user = make_user(db, "demoted@example.com", roles=(Role.FAN, Role.FINANCE))
    client.login("demoted@example.com", PASSWORD)
    assert client.get("/finance/").status_code == 200
    user = db.get(User, user.id)
    from crowdfund.accounts import roles as account_roles

    admin = make_user(db, roles=(Role.ADMIN,))
    account_roles.revoke_role(db, user, "finance", acting_user=admin)
    db.commit()
    # The old cookie no longer identifies anyone: sent to log in, not given the page.
    response = client.get("/finance/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


#: A Fernet key for the production apps these tests build.
PRODUCTION_PAYOUT_KEY = "Zm9yLXRlc3RzLW9ubHktbm90LWEtcmVhbC1rZXkhISE="


def test_production_refuses_to_start_without_secret_key(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pytest

    import config
    from crowdfund.app import create_app

    monkeypatch.setattr(config.ProductionConfig, "SECRET_KEY", None)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app("production", {"DATABASE_URL": "sqlite://", "RATELIMIT_STORAGE_URI": "memory://"})
    settings = {
        "DATABASE_URL": "sqlite://",
        "SECRET_KEY": "x" * 32,
        "RATELIMIT_STORAGE_URI": "memory://",
        "MAIL_DELIVERY_THREAD": False,
    }
    # Nor without a key to seal bank details with.
    with pytest.raises(RuntimeError, match="PAYOUT_DETAILS_KEYS"):
        create_app("production", settings)
    app = create_app("production", {**settings, "PAYOUT_DETAILS_KEYS": PRODUCTION_PAYOUT_KEY})
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["SESSION_COOKIE_HTTPONLY"]
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


OFF_SITE_NEXT = [
    "/\t/evil.example",
    "//evil.example/x",
    "/\\evil.example",
    "\\\\evil.example",
    "https:evil.example",
    "https://evil.example/",
    "//evil",
    "/\t/evil",
    "/\r\n/evil",
    " //evil",
    "\x01//evil",
    "/\\/evil",
    "javascript:alert(1)",
    "\t//evil",
    "/\n/evil.example",
    "//\tevil",
    "http:/evil",
    "///evil",
    "/\x7f/evil",
    "/\u3000/evil",
    "\u00a0//evil",
]


def _log_in_with_next(client: Client, next_url: str):  # type: ignore[no-untyped-def]
    token = client.csrf_token()
    return client.post(
        "/login",
        query_string={"next": next_url},
        data={"email": "next@example.com", "password": PASSWORD, "csrf_token": token},
    )


def test_login_never_redirects_off_site(client: Client, db: Session) -> None:
    from urllib.parse import urlsplit

    make_user(db, "next@example.com")
    for next_url in OFF_SITE_NEXT:
        # Query values arrive percent-decoded once, as a browser would send "?next=/%09/evil.example".
        response = _log_in_with_next(client, next_url)
        assert response.status_code == 302, (next_url, response.status_code)
        location = response.headers["Location"]
        parts = urlsplit(location.replace("\\", "/"))
        assert not parts.netloc and not parts.scheme and not location.startswith("//"), (next_url, location)
        assert location == "/portfolio", (next_url, location)
        client.post_form("/logout")
    # The report's own request, percent-encoded in the URL as a browser sends it.
    response = client.post(
        "/login?next=/%09/evil.example",
        data={"email": "next@example.com", "password": PASSWORD, "csrf_token": client.csrf_token()},
    )
    assert response.headers["Location"] == "/portfolio"


def test_login_follows_same_site_next_cleaned(client: Client, db: Session) -> None:
    make_user(db, "next@example.com")
    for next_url, expected in [
        ("/studio/", "/studio/"),
        ("/films/x?a=1#b", "/films/x?a=1#b"),
        ("/%0d%0aSet-Cookie:x", "/%0d%0aSet-Cookie:x"),
        ("/fi\tlms/x", "/films/x"),
        ("/films/caf\u00e9", "/films/caf%C3%A9"),
    ]:
        response = _log_in_with_next(client, next_url)
        assert response.status_code == 302, (next_url, response.status_code)
        assert response.headers["Location"] == expected
        assert "Set-Cookie: x" not in str(response.headers) and "\n" not in response.headers["Location"]
        client.post_form("/logout")


def test_cr_or_lf_in_next_is_not_a_500(client: Client, db: Session) -> None:
    make_user(db, "next@example.com")
    for next_url in ("/\r\nSet-Cookie: x=1", "/a\nb", "/a\rb"):
        response = _log_in_with_next(client, next_url)
        assert response.status_code == 302, (next_url, response.status_code)
        assert "x=1" not in response.headers.get("Set-Cookie", "")
        client.post_form("/logout")


def test_sign_up_answers_the_same_whether_or_not_the_address_has_an_account(
    client: Client, db: Session, mail: MailCapture
) -> None:
    owner = make_user(db, "taken@example.com", name="Tara")
    answers = []
    for email in ("TAKEN@example.com", "fresh@example.com"):
        response = client.post_form(
            "/signup", {"display_name": "Someone", "email": email, "password": PASSWORD, "confirm": PASSWORD}
        )
        page = client.get(response.headers["Location"]).get_data(as_text=True)
        answers.append(
            (
                response.status_code,
                response.headers["Location"],
                re.sub(r'name="csrf_token"[^>]*>', "", page).replace(email, "EMAIL"),
            )
        )
    assert answers[0] == answers[1]
    assert answers[0][0] == 303 and "Check your e-mail" in answers[0][2]
    assert "already exists" not in answers[0][2]
    # The owner is told instead, and nothing about their account changes.
    notices = mail.to("taken@example.com")
    assert [m["Subject"] for m in notices] == ["Someone tried to sign up with your address"]
    body = notices[0].get_content()
    assert "Hello Tara" in body and "/login" in body and "/forgot-password" in body
    assert db.scalar(select(func.count()).select_from(User).where(User.email == "taken@example.com")) == 1
    db.reread()
    assert db.get(User, owner.id).display_name == "Tara"
    client.login("taken@example.com", PASSWORD)
    # The new address gets its confirmation link.
    assert verification_link(mail, "fresh@example.com")

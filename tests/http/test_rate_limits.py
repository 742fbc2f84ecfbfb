"""Rate limits: log-in per account and per address, sign-up, password reset,
stake holds, check-in and the webhook. Each test builds its own app with low
limits (the shared test app's limits are far above anything the suite sends),
on the same database, Stripe and mail as the rest of the suite."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask
from sqlalchemy import func, select

from crowdfund.accounts.models import User
from crowdfund.app import create_app
from crowdfund.films.states import FilmState
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_film, make_studio_user, make_user
from tests.http.test_auth import PRODUCTION_PAYOUT_KEY

# Each test builds an app of its own (its own engine): it sees only what is committed.
pytestmark = pytest.mark.committing

REDIS_URL = "redis://127.0.0.1:6379/0"
SHARED_KEYS = (
    "DATABASE_URL",
    "STRIPE_API_BASE",
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_JS_URL",
    "STRIPE_TIMEOUT_SECONDS",
    "MAIL_BACKEND",
    "MAIL_PORT",
)
HIGH = "1000 per minute"
ALL_LIMITS = (
    "RATELIMIT_LOGIN_ACCOUNT",
    "RATELIMIT_LOGIN_ADDRESS",
    "RATELIMIT_SIGNUP",
    "RATELIMIT_RESET_ADDRESS",
    "RATELIMIT_RESET_ACCOUNT",
    "RATELIMIT_HOLD",
    "RATELIMIT_CHECK_IN",
    "RATELIMIT_WEBHOOK",
    "RATELIMIT_VERIFY_EMAIL",
    "RATELIMIT_CHECKOUT",
)


@pytest.fixture
def limited(app: Flask) -> Iterator[Callable[..., Client]]:
    """limited(RATELIMIT_X="2 per minute", ...) -> a client of a new app where only those limits are low."""
    made: list[Flask] = []

    def build(**overrides: object) -> Client:
        config = {key: app.config[key] for key in SHARED_KEYS}
        config.update({name: HIGH for name in ALL_LIMITS})
        config.update(overrides)
        limited_app = create_app("testing", config)
        made.append(limited_app)
        limited_app.test_client_class = Client
        return limited_app.test_client()  # type: ignore[return-value]

    yield build
    for made_app in made:
        app_services(made_app).gateway.close()
        app_services(made_app).engine.dispose()


def from_address(address: str) -> dict[str, object]:
    return {"environ_base": {"REMOTE_ADDR": address}}


def assert_limited(response, *, json: bool = False) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 429, response.get_data(as_text=True)[:300]
    # Every limit here is "N per minute": the client may come back within the minute.
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= 61
    if json:
        assert response.is_json and response.get_json()["result"] == "rate_limited"
        assert "Too many" in response.get_json()["message"]
    else:
        assert response.mimetype == "text/html"
        assert "Too many attempts. Please wait a little and try again." in response.get_data(as_text=True)


def test_log_in_is_limited_per_address(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    make_user(db, "fan@example.com")
    client = limited(RATELIMIT_LOGIN_ADDRESS="3 per minute")
    token = client.csrf_token()
    attempts = [
        client.post(
            "/login",
            data={"email": f"guess{n}@example.com", "password": "wrong password", "csrf_token": token},
            **from_address("10.0.0.1"),
        )
        for n in range(3)
    ]
    assert [r.status_code for r in attempts] == [400, 400, 400]
    blocked = client.post(
        "/login",
        data={"email": "fan@example.com", "password": PASSWORD, "csrf_token": token},
        **from_address("10.0.0.1"),
    )
    assert_limited(blocked)
    # Showing the form is not an attempt, and another address is not affected.
    assert client.get("/login", **from_address("10.0.0.1")).status_code == 200
    other = client.post(
        "/login",
        data={"email": "fan@example.com", "password": PASSWORD, "csrf_token": token},
        **from_address("10.0.0.2"),
    )
    assert other.status_code == 302


def test_log_in_is_limited_per_account_whatever_the_address(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    make_user(db, "victim@example.com")
    make_user(db, "bystander@example.com")
    client = limited(RATELIMIT_LOGIN_ACCOUNT="3 per minute")
    token = client.csrf_token()

    def attempt(email: str, password: str, address: str):  # type: ignore[no-untyped-def]
        return client.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": token},
            **from_address(address),
        )

    # A botnet: each guess from another address, the same account (in any case).
    guesses = [
        attempt(email, "wrong password", f"10.1.0.{n}")
        for n, email in enumerate(["victim@example.com", "VICTIM@example.com", " victim@example.com"])
    ]
    assert [r.status_code for r in guesses] == [400, 400, 400]
    # Even the right password is refused now: the guesser cannot learn it.
    assert_limited(attempt("victim@example.com", PASSWORD, "10.1.0.9"))
    # Other accounts from the same addresses are not affected.
    assert attempt("bystander@example.com", PASSWORD, "10.1.0.1").status_code == 302


def test_successful_log_ins_do_not_use_up_the_account_limit(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    make_user(db, "regular@example.com")
    client = limited(RATELIMIT_LOGIN_ACCOUNT="2 per minute")
    for _ in range(4):
        assert (
            client.post_form("/login", {"email": "regular@example.com", "password": PASSWORD}).status_code
            == 302
        )
        client.post_form("/logout")


def test_sign_up_is_limited_per_address(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    client = limited(RATELIMIT_SIGNUP="2 per minute")

    def sign_up(n: int):  # type: ignore[no-untyped-def]
        return client.post_form(
            "/signup",
            {
                "display_name": "Bot",
                "email": f"bot{n}@example.com",
                "password": PASSWORD,
                "confirm": PASSWORD,
            },
        )

    assert [sign_up(n).status_code for n in range(2)] == [303, 303]
    assert_limited(sign_up(3))
    assert db.scalar(select(func.count()).select_from(User).where(User.email == "bot3@example.com")) == 0


def test_sign_up_limit_counts_accounts_not_forms_with_errors(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    client = limited(RATELIMIT_SIGNUP="2 per minute")

    def sign_up(email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
        return client.post_form(
            "/signup", {"display_name": "Typo", "email": email, "password": password, "confirm": password}
        )

    # A person fixing their form: three posts with mistakes use up nothing.
    assert [
        sign_up(e, p).status_code for e, p in [("typo", PASSWORD), ("a@example.com", "short"), ("", PASSWORD)]
    ] == [400, 400, 400]
    assert [sign_up(f"real{n}@example.com").status_code for n in range(2)] == [303, 303]
    assert db.scalar(select(func.count()).select_from(User)) == 2
    assert_limited(sign_up("real3@example.com"))


def _production(**overrides: object) -> Flask:
    # No tables in sqlite://: no mail delivery thread to look for them.
    settings: dict[str, object] = {
        "DATABASE_URL": "sqlite://",
        "SECRET_KEY": "x" * 32,
        "MAIL_DELIVERY_THREAD": False,
        "PAYOUT_DETAILS_KEYS": PRODUCTION_PAYOUT_KEY,
    }
    settings.update(overrides)
    return create_app("production", settings)


def test_production_refuses_to_count_limits_per_worker(caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    # No REDIS_URL: each gunicorn worker would keep its own counts, so N workers allow N times the limit.
    with pytest.raises(RuntimeError, match="REDIS_URL"):
        _production(REDIS_URL="")
    # Explicitly chosen memory storage starts, and says loudly what it means.
    with caplog.at_level(logging.WARNING, logger="crowdfund.site.extensions"):
        app = _production(REDIS_URL="", RATELIMIT_STORAGE_URI="memory://")
    assert app.extensions["crowdfund.limiter"]._storage_uri == "memory://"
    loud = [r for r in caplog.records if r.levelno >= logging.CRITICAL and "memory" in r.getMessage()]
    assert loud, [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crowdfund.site.extensions"):
        app = _production(REDIS_URL=REDIS_URL)
    assert app.extensions["crowdfund.limiter"]._storage_uri == REDIS_URL
    assert not [r for r in caplog.records if "memory" in r.getMessage()]
    # Limits switched off on purpose need no storage.
    assert _production(REDIS_URL="", RATELIMIT_ENABLED=False)


def test_password_reset_requests_are_limited(limited, db: CheckSession, mail) -> None:  # type: ignore[no-untyped-def]
    make_user(db, "forgetful@example.com")
    client = limited(RATELIMIT_RESET_ACCOUNT="2 per minute", RATELIMIT_RESET_ADDRESS="3 per minute")
    for n in range(2):
        response = client.post_form(
            "/forgot-password", {"email": "forgetful@example.com"}, **from_address(f"10.2.0.{n}")
        )
        assert response.status_code == 303
    sent = len(mail.to("forgetful@example.com"))
    assert sent >= 1  # two requests in the same second make the same link, mailed once
    assert_limited(
        client.post_form("/forgot-password", {"email": "forgetful@example.com"}, **from_address("10.2.0.9"))
    )
    assert len(mail.to("forgetful@example.com")) == sent
    # Per address (3): 10.2.0.0 asked once; two more for other e-mails, then it is refused.
    for n in range(2):
        assert (
            client.post_form(
                "/forgot-password", {"email": f"x{n}@example.com"}, **from_address("10.2.0.0")
            ).status_code
            == 303
        )
    assert_limited(
        client.post_form("/forgot-password", {"email": "y@example.com"}, **from_address("10.2.0.0"))
    )


def test_stake_holds_are_limited_per_fan(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    make_user(db, "eager@example.com")
    make_user(db, "calm@example.com")
    client = limited(RATELIMIT_HOLD="2 per minute")
    client.login("eager@example.com", PASSWORD)
    for n in range(2):
        response = client.post_form(f"/films/{film.slug}/hold", {"units": "1", "key": f"eager-key-{n:08d}"})
        assert response.status_code == 303 and "/checkout" in response.headers["Location"]
    assert_limited(client.post_form(f"/films/{film.slug}/hold", {"units": "1", "key": "eager-key-00000003"}))
    # Another fan, from the same address, can still buy.
    client.post_form("/logout")
    client.login("calm@example.com", PASSWORD)
    assert (
        client.post_form(f"/films/{film.slug}/hold", {"units": "1", "key": "calm-key-000000001"}).status_code
        == 303
    )


def test_check_in_is_limited_and_answers_json_in_json(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    client = limited(RATELIMIT_CHECK_IN="2 per minute")
    client.login(studio.email, PASSWORD)
    token = client.csrf_token()

    def scan():  # type: ignore[no-untyped-def]
        return client.post(
            "/studio/screenings/999/check-in.json",
            json={"code": "ABCDE-FGHJK-LMNPQ-RSTUV"},
            headers={"X-CSRFToken": token, "Accept": "application/json"},
        )

    assert [scan().status_code for _ in range(2)] == [404, 404]
    assert_limited(scan(), json=True)
    # Opening the check-in page is not counted, only scans are.
    assert client.get("/studio/screenings/999/check-in").status_code == 404


def test_webhook_is_limited_per_address(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    client = limited(RATELIMIT_WEBHOOK="2 per minute")

    def deliver():  # type: ignore[no-untyped-def]
        return client.post(
            "/stripe/webhook",
            data=b'{"id": "evt_1"}',
            content_type="application/json",
            headers={"Stripe-Signature": "t=1,v1=bad"},
        )

    assert [deliver().status_code for _ in range(2)] == [400, 400]
    assert_limited(deliver(), json=True)


def test_limits_can_be_switched_off(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    client = limited(RATELIMIT_WEBHOOK="1 per minute", RATELIMIT_ENABLED=False)
    statuses = [
        client.post("/stripe/webhook", data=b"{}", content_type="application/json").status_code
        for _ in range(3)
    ]
    assert statuses == [400, 400, 400]


def test_limits_live_in_redis_and_are_shared_by_every_worker(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    store = redis.Redis.from_url(REDIS_URL)
    assert store.ping(), "the Redis at 127.0.0.1:6379 is needed for this test"
    prefix = f"crowdfund-test-{uuid.uuid4().hex[:8]}"
    settings = {
        "REDIS_URL": REDIS_URL,
        "RATELIMIT_KEY_PREFIX": prefix,
        "RATELIMIT_LOGIN_ADDRESS": "2 per minute",
    }
    worker_one, worker_two = limited(**settings), limited(**settings)
    try:
        token = worker_one.csrf_token()
        form = {"email": "nobody@example.com", "password": "wrong password", "csrf_token": token}
        assert worker_one.post("/login", data=form).status_code == 400
        assert worker_one.post("/login", data=form).status_code == 400
        keys = store.keys(f"*{prefix}*")
        assert keys, "the limiter wrote nothing to Redis"
        # A second worker process (here: a second app) sees the same count.
        second_form = dict(form, csrf_token=worker_two.csrf_token())
        assert_limited(worker_two.post("/login", data=second_form))
        assert_limited(worker_one.post("/login", data=form))
    finally:
        for key in store.keys(f"*{prefix}*"):
            store.delete(key)
        store.close()


def test_the_checkout_page_is_limited_per_fan(limited, db: CheckSession) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import hold

    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    eager, calm = make_user(db, "reloader@example.com"), make_user(db, "patient@example.com")
    eager_order, calm_order = hold(db, eager, film, 1), hold(db, calm, film, 1)
    client = limited(RATELIMIT_CHECKOUT="2 per minute")
    client.login(eager.email, PASSWORD)
    for _ in range(2):
        assert client.get(f"/orders/{eager_order.reference}/checkout").status_code == 200
    assert_limited(client.get(f"/orders/{eager_order.reference}/checkout"))
    # Another fan, from the same address, can still pay.
    client.post_form("/logout")
    client.login(calm.email, PASSWORD)
    assert client.get(f"/orders/{calm_order.reference}/checkout").status_code == 200

"""Requests to Stripe wait for the shared token bucket: the real StripeGateway
against localstripe, with the bucket build_services gives it (in Redis)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from config import config_for
from crowdfund.app_services import stripe_bucket, stripe_rate
from crowdfund.dev.localstripe_server import LocalStripe
from crowdfund.errors import GatewayError
from crowdfund.payments.gateway import StripeGateway
from crowdfund.rate_limit import LocalTokenBucket, RedisTokenBucket, UnlimitedBucket
from tests.localstripe_fixture import SECRET_KEY, WEBHOOK_SECRET, localstripe  # noqa: F401  (fixture)

REDIS_URL = "redis://127.0.0.1:6379/6"
META = {"order": "17", "film": "3", "user": "5"}


@pytest.fixture
def settings() -> Iterator[dict[str, Any]]:
    """The settings stripe_bucket reads, with a Redis key prefix of this test's own (removed after)."""
    store = redis.Redis.from_url(REDIS_URL)
    assert store.ping(), "the Redis at 127.0.0.1:6379 is needed for this test"
    prefix = f"crowdfund-test-{uuid.uuid4().hex[:8]}"
    yield {"STRIPE_SECRET_KEY": SECRET_KEY, "REDIS_URL": REDIS_URL, "RATELIMIT_KEY_PREFIX": prefix}
    for key in store.scan_iter(f"{prefix}*"):
        store.delete(key)
    store.close()


def test_requests_to_stripe_wait_for_the_rate(localstripe: LocalStripe, settings: dict[str, Any]) -> None:
    rate, calls = 5, 8
    bucket = stripe_bucket({**settings, "STRIPE_MAX_REQUESTS_PER_SECOND": rate})
    assert isinstance(bucket, RedisTokenBucket)
    burst = bucket.burst
    with StripeGateway(
        SECRET_KEY, localstripe.url, WEBHOOK_SECRET, timeout_seconds=5, rate_limit=bucket
    ) as gw:
        started = time.monotonic()
        intents = [gw.create_setup_intent(META) for _ in range(calls)]
        elapsed = time.monotonic() - started
    assert len({intent.id for intent in intents}) == calls  # each call reached Stripe
    # The first `burst` go at once, each later one waits 1/rate s for its token.
    assert elapsed >= (calls - burst) / rate, f"{calls} requests in {elapsed:.2f} s at {rate}/s"


def test_a_request_that_would_wait_too_long_is_not_sent_and_reported_busy(
    localstripe: LocalStripe, settings: dict[str, Any]
) -> None:
    bucket = stripe_bucket({**settings, "STRIPE_MAX_REQUESTS_PER_SECOND": 1})
    with StripeGateway(
        SECRET_KEY, localstripe.url, WEBHOOK_SECRET, rate_limit=bucket, rate_limit_wait_seconds=0.1
    ) as gw:
        gw.create_setup_intent(META)  # the burst of one
        with pytest.raises(GatewayError, match="busy") as raised:
            gw.create_setup_intent(META)
    assert raised.value.retryable
    assert "no token within 0.1 s" in raised.value.detail


def test_workers_with_the_same_stripe_key_share_one_bucket(settings: dict[str, Any]) -> None:
    one, two = stripe_bucket(settings), stripe_bucket(settings)
    other_account = stripe_bucket({**settings, "STRIPE_SECRET_KEY": "sk_test_other"})
    assert isinstance(one, RedisTokenBucket) and isinstance(two, RedisTokenBucket)
    assert isinstance(other_account, RedisTokenBucket)
    assert one.key == two.key != other_account.key
    assert SECRET_KEY not in one.key  # a hash of the key, never the key


def test_without_redis_each_process_limits_itself_and_rate_zero_does_not_limit() -> None:
    settings = {"STRIPE_SECRET_KEY": SECRET_KEY, "REDIS_URL": ""}
    assert isinstance(stripe_bucket(settings), LocalTokenBucket)
    assert isinstance(stripe_bucket({**settings, "STRIPE_MAX_REQUESTS_PER_SECOND": 0}), UnlimitedBucket)


@pytest.mark.parametrize(
    ("key", "configured", "rate"),
    [
        ("sk_live_abc", None, 100),
        ("sk_test_abc", None, 25),
        ("rk_live_abc", "", 25),  # not an sk_live_ key: the sandbox's limit, the safer one
        ("sk_live_abc", 40, 40),
        ("sk_test_abc", 0, 0),
    ],
)
def test_the_default_rate_is_stripes_own_for_the_key(key: str, configured: int | None, rate: int) -> None:
    assert stripe_rate({"STRIPE_SECRET_KEY": key, "STRIPE_MAX_REQUESTS_PER_SECOND": configured}) == rate


def test_the_rate_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRIPE_MAX_REQUESTS_PER_SECOND", raising=False)
    assert config_for("production")["STRIPE_MAX_REQUESTS_PER_SECOND"] is None
    monkeypatch.setenv("STRIPE_MAX_REQUESTS_PER_SECOND", "")
    assert config_for("production")["STRIPE_MAX_REQUESTS_PER_SECOND"] is None
    monkeypatch.setenv("STRIPE_MAX_REQUESTS_PER_SECOND", "40")
    assert config_for("production")["STRIPE_MAX_REQUESTS_PER_SECOND"] == 40

"""The token buckets of crowdfund/rate_limit.py count right: in t seconds a
bucket of `rate` per second and `burst` hands out at most rate * t + burst
tokens (and not far fewer), in one process and across processes sharing one
Redis bucket. Real Redis, real processes, real time (short windows)."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from crowdfund.rate_limit import (
    LocalTokenBucket,
    RateLimitTimeout,
    RedisTokenBucket,
    TokenBucket,
    UnlimitedBucket,
    make_bucket,
)

REDIS_URL = "redis://127.0.0.1:6379/6"
RATE, BURST, WINDOW = 20, 5, 1.5


@pytest.fixture
def bucket_key() -> Iterator[str]:
    """A key of this test's own, and none of its keys left behind."""
    store = redis.Redis.from_url(REDIS_URL)
    assert store.ping(), "the Redis at 127.0.0.1:6379 is needed for this test"
    prefix = f"crowdfund-test-bucket-{uuid.uuid4().hex[:8]}"
    yield f"{prefix}:stripe"
    for key in store.scan_iter(f"{prefix}*"):
        store.delete(key)
    store.close()


def take_for(bucket: TokenBucket, seconds: float) -> tuple[int, float, float]:
    """Acquire tokens as fast as the bucket allows for `seconds`: (how many, from, to),
    the times (wall clock) before the first call and after the last token."""
    started = time.time()
    taken, last = 0, started
    while time.time() - started < seconds:
        bucket.acquire(timeout=5)
        taken, last = taken + 1, time.time()
    return taken, started, last


def assert_within_limit(taken: int, elapsed: float) -> None:
    most = RATE * elapsed + BURST
    assert taken <= most, f"{taken} tokens in {elapsed:.2f} s: the limit allows {most:.1f}"
    # And the limit is not stricter than asked (sleep overshoot costs a little).
    assert taken >= 0.75 * RATE * elapsed, f"only {taken} tokens in {elapsed:.2f} s at {RATE}/s"


BUCKETS: dict[str, Callable[[str], TokenBucket]] = {
    "local": lambda key: LocalTokenBucket(RATE, BURST),
    "redis": lambda key: make_bucket(RATE, BURST, REDIS_URL, key),
}


@pytest.mark.parametrize("kind", sorted(BUCKETS))
def test_a_bucket_hands_out_at_most_rate_times_time_plus_burst(kind: str, bucket_key: str) -> None:
    bucket = BUCKETS[kind](bucket_key)
    taken, started, last = take_for(bucket, WINDOW)
    assert_within_limit(taken, last - started)


@pytest.mark.parametrize("kind", sorted(BUCKETS))
def test_a_full_bucket_gives_its_burst_at_once_then_says_how_long_to_wait(kind: str, bucket_key: str) -> None:
    bucket = BUCKETS[kind](bucket_key)
    assert [bucket.try_take() for _ in range(BURST)] == [0.0] * BURST
    wait = bucket.try_take()
    # One token comes every 1/RATE s; a little of it has passed already.
    assert 0 < wait <= 1 / RATE


@pytest.mark.parametrize("kind", sorted(BUCKETS))
def test_acquire_gives_up_when_the_wait_is_longer_than_the_timeout(kind: str, bucket_key: str) -> None:
    bucket = BUCKETS[kind](bucket_key)
    for _ in range(BURST):
        bucket.acquire(timeout=0.01)
    with pytest.raises(RateLimitTimeout, match="no token within 0.01 s"):
        bucket.acquire(timeout=0.01)
    bucket.acquire(timeout=1)  # a token comes within 1/RATE s


def test_the_redis_bucket_lives_in_redis_and_expires_once_full_again(bucket_key: str) -> None:
    make_bucket(RATE, BURST, REDIS_URL, bucket_key).acquire(timeout=1)
    store = redis.Redis.from_url(REDIS_URL)
    assert float(store.hget(bucket_key, "tokens") or 0) == pytest.approx(BURST - 1, abs=0.1)
    # Full again after (BURST - 1 tokens missing) / RATE s: no key need stay much longer.
    assert 0 < store.pttl(bucket_key) <= (BURST / RATE + 1) * 1000
    store.close()


def test_rate_zero_is_unlimited() -> None:
    bucket = make_bucket(0, 1, REDIS_URL, "unused")
    assert isinstance(bucket, UnlimitedBucket)
    assert [bucket.try_take() for _ in range(1000)] == [0.0] * 1000


def test_without_a_redis_url_the_bucket_is_this_process_own() -> None:
    assert isinstance(make_bucket(RATE, BURST, "", "k"), LocalTokenBucket)
    assert isinstance(make_bucket(RATE, BURST, REDIS_URL, "k"), RedisTokenBucket)


def test_an_unreachable_redis_limits_this_process_instead_of_refusing_every_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bucket = make_bucket(RATE, BURST, "redis://127.0.0.1:1/0", "nowhere")
    assert [bucket.try_take() for _ in range(BURST)] == [0.0] * BURST
    assert bucket.try_take() > 0
    assert "Redis unreachable" in caplog.text


# --- Several processes, one bucket ---------------------------------------------


def _worker(key: str, ready: Any, results: Any) -> None:
    # Each process makes its own client and bucket, as each gunicorn or Celery worker does.
    bucket = make_bucket(RATE, BURST, REDIS_URL, key)
    ready.wait()
    results.put(take_for(bucket, WINDOW))


def test_processes_sharing_one_redis_bucket_together_get_no_more_than_the_limit(bucket_key: str) -> None:
    processes = 4
    context = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    ready, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_worker, args=(bucket_key, ready, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        counts = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
    assert all(worker.exitcode == 0 for worker in workers)
    taken = sum(count for count, _, _ in counts)
    started = min(start for _, start, _ in counts)
    last = max(end for _, _, end in counts)
    assert_within_limit(taken, last - started)
    # Every process got some: they shared the bucket, nobody was shut out.
    assert all(count > 0 for count, _, _ in counts)

"""A token bucket: at most `rate` requests per second, with bursts of `burst`.

Stripe limits requests per account (live 100/s, sandbox 25/s), whichever
process sends them; so the bucket that keeps us under it must be shared by
every gunicorn and Celery worker on every machine: `RedisTokenBucket`, one
hash in Redis, refilled and taken from by one Lua script (atomic, and timed
by the Redis server's clock, so workers whose clocks disagree still share one
rate). Without Redis (the SQLite demo, tests) `LocalTokenBucket` limits one
process; `UnlimitedBucket` does not limit (rate 0).

    bucket.acquire(timeout=5)   # returns once a token is taken, or raises RateLimitTimeout

Core: imports no Flask and no Stripe (the payments adapter calls it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from redis.commands.core import Script

log = logging.getLogger(__name__)


class RateLimitTimeout(Exception):
    """No token came within the timeout: the request was not sent."""

    def __init__(self, name: str, timeout: float, wait: float) -> None:
        super().__init__(f"rate limit {name!r}: no token within {timeout:g} s (the next one in {wait:.3f} s)")
        self.wait = wait


class TokenBucket:
    """`try_take()` takes a token (0.0) or says how many seconds until one
    may be there; `acquire()` sleeps those waits until it gets one."""

    name = "bucket"

    def try_take(self) -> float:
        raise NotImplementedError

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            wait = self.try_take()
            if wait <= 0:
                return
            # Give up at once rather than sleep into a wait that cannot end in time.
            if time.monotonic() + wait > deadline:
                raise RateLimitTimeout(self.name, timeout, wait)
            # Another worker may take the token first: then ask again.
            time.sleep(wait)


class UnlimitedBucket(TokenBucket):
    name = "unlimited"

    def try_take(self) -> float:
        return 0.0


def _check(rate: float, burst: int) -> None:
    if rate <= 0 or burst < 1:
        raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, not {rate} and {burst}")


class LocalTokenBucket(TokenBucket):
    """One process's bucket: threads share it, other processes do not."""

    def __init__(self, rate: float, burst: int, name: str = "local") -> None:
        _check(rate, burst)
        self.rate, self.burst, self.name = rate, burst, name
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._at = time.monotonic()

    def try_take(self) -> float:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


# KEYS[1]: the bucket (a hash: tokens, and s/us, the server time they were counted at).
# ARGV: rate (tokens per second), burst, expiry in ms. Returns 0 when a token
# was taken, else the microseconds until one will be there (rounded up).
_TAKE = """
if redis.replicate_commands then redis.replicate_commands() end
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = redis.call('TIME')
local state = redis.call('HMGET', KEYS[1], 'tokens', 's', 'us')
local tokens, s, us = tonumber(state[1]), now[1], now[2]
if tokens == nil then
  tokens = burst
else
  local elapsed = (tonumber(s) - tonumber(state[2])) + (tonumber(us) - tonumber(state[3])) / 1e6
  if elapsed > 0 then
    tokens = math.min(burst, tokens + elapsed * rate)
  else
    s, us = state[2], state[3]  -- a server clock that stepped back (failover) refills nothing twice
  end
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1e6)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 's', s, 'us', us)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return wait
"""


class RedisTokenBucket(TokenBucket):
    """One bucket for every process that uses the same Redis and key.

    If Redis cannot be reached, this process limits itself with a local
    bucket of the same rate until it can (logged): N processes may then send
    N times the rate, and Stripe answers the excess with 429s, which callers
    already treat as "busy, try again"; refusing every payment would be worse.
    """

    def __init__(self, client: redis.Redis, key: str, rate: float, burst: int) -> None:
        _check(rate, burst)
        self.rate, self.burst, self.key, self.name = rate, burst, key, key
        self._script: Script = client.register_script(_TAKE)
        # A full bucket needs no state: let an idle one vanish after it refilled.
        self._expire_ms = int((burst / rate + 1) * 1000)
        self._fallback = LocalTokenBucket(rate, burst, name=f"{key} (local fallback)")
        self._redis_down = False

    def try_take(self) -> float:
        try:
            wait_us = int(self._script(keys=[self.key], args=[self.rate, self.burst, self._expire_ms]))
        except redis.RedisError as error:
            if not self._redis_down:
                log.warning(
                    "rate limit %s: Redis unreachable (%s); limiting this process only", self.key, error
                )
                self._redis_down = True
            return self._fallback.try_take()
        if self._redis_down:
            log.warning("rate limit %s: Redis is back; the limit is shared again", self.key)
            self._redis_down = False
        return wait_us / 1e6


def make_bucket(rate: float, burst: int, redis_url: str = "", key: str = "rate-limit") -> TokenBucket:
    """The bucket for `rate` per second: shared in Redis when `redis_url` is
    given, else this process's own; unlimited when rate is 0."""
    if rate <= 0:
        return UnlimitedBucket()
    if not redis_url:
        return LocalTokenBucket(rate, burst, name=key)
    # Short socket timeouts: a Redis that hangs falls back quickly instead of stalling a payment.
    client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    return RedisTokenBucket(client, key, rate, burst)

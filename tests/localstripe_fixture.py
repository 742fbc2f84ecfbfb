"""localstripe for tests: one in-process server per test run, plus a webhook
sink. Import the fixtures from tests/conftest.py (or a test module):

    from tests.localstripe_fixture import localstripe, webhook_sink  # noqa: F401
"""

from __future__ import annotations

import atexit
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from crowdfund.dev.localstripe_server import LocalStripe, register_webhook, start_in_thread

SECRET_KEY = "sk_test_crowdfund"  # localstripe accepts any key starting "sk_"
PUBLISHABLE_KEY = "pk_test_crowdfund"
WEBHOOK_SECRET = "whsec_test_crowdfund"

_server: LocalStripe | None = None
_lock = threading.Lock()


def shared_localstripe() -> LocalStripe:
    """The run's one server. localstripe's store and aiohttp app are process
    globals, so two servers would share state anyway; sharing one also makes
    it harmless for this fixture to be imported in more than one place."""
    global _server
    with _lock:
        if _server is None:
            _server = start_in_thread()
            atexit.register(_server.stop)
        return _server


@pytest.fixture(scope="session")
def localstripe() -> LocalStripe:
    return shared_localstripe()


@dataclass(frozen=True)
class Delivery:
    signature: str
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class WebhookSink:
    """An HTTP endpoint on 127.0.0.1 that records what localstripe posts."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.deliveries.append(Delivery(self.headers.get("Stripe-Signature", ""), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stripe/webhook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, event_type: str, object_id: str, timeout: float = 5.0) -> Delivery:
        # localstripe posts each event about 1 s after the call that caused it.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for delivery in list(self.deliveries):
                event = delivery.event
                if event["type"] == event_type and event["data"]["object"]["id"] == object_id:
                    return delivery
            time.sleep(0.05)
        raise AssertionError(f"no {event_type} webhook for {object_id} within {timeout} s")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def webhook_sink(localstripe: LocalStripe) -> Iterator[WebhookSink]:
    sink = WebhookSink()
    # One fixed id: registering it again replaces the previous module's sink,
    # since localstripe cannot unregister a webhook.
    register_webhook(localstripe.url, "tests", sink.url, WEBHOOK_SECRET)
    yield sink
    sink.close()

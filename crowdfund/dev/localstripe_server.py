"""Run localstripe (a fake Stripe API) on loopback, from Python.

Never use localstripe's stock command: it listens on every interface and
pickles its whole store to /tmp on each write. Here persistence is patched out,
its store is indexed by kind of object (its lists scanned the whole store, which
made N payments cost O(N^2)), and the server binds 127.0.0.1 only.

    python -m crowdfund.dev.localstripe_server 8420   # foreground (make demo)
    ls = start_in_thread()                                  # tests: background thread

Also here: the config calls (webhook registration, reset) and stand-ins for
what localstripe's fake Stripe.js does in a browser (confirmCardSetup,
confirmCardPayment), so tests can walk the whole card flow without Chromium.
All HTTP here is stdlib urllib: this module must not import `stripe`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"
JS_PATH = "/js.stripe.com/v3/"


class LocalStripeError(RuntimeError):
    """localstripe answered a config or browser-stand-in call with an error."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"localstripe answered {status}: {body}")
        self.status = status
        self.body = body


def _disable_persistence() -> None:
    # Store writes a pickle to /tmp/localstripe.pickle on every __setitem__ and
    # after every POST/DELETE; one shared file would leak state between runs.
    from localstripe.resources import Store

    Store.dump_to_disk = lambda self: None
    Store.try_load_from_disk = lambda self: None


_KINDS: dict[str, dict[str, Any]] = {}


def _index_store_by_kind() -> None:
    # localstripe lists the objects of one kind by scanning its whole store, and
    # every Charge it returns (inside each PaymentIntent) lists its refunds that
    # way, so N payments cost O(N^2): 20,000 take hours. An index by kind makes
    # each list scan only its kind; the same objects come back in the same order.
    from localstripe import resources

    def set_item(self: Any, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        if ":" in key:
            _KINDS.setdefault(key.split(":", 1)[0], {})[key] = value

    def del_item(self: Any, key: str) -> None:
        dict.__delitem__(self, key)
        _KINDS.get(key.split(":", 1)[0], {}).pop(key, None)

    def clear(self: Any) -> None:
        dict.clear(self)
        _KINDS.clear()

    def list_all(cls: Any, /, url: str, limit: Any = None, starting_after: Any = None, **kwargs: Any) -> Any:
        if kwargs:
            raise resources.UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        listing = resources.List(url, limit=limit, starting_after=starting_after)
        listing._list = list(_KINDS.get(cls.object, {}).values())
        return listing

    store = resources.store
    _KINDS.clear()
    for key, value in store.items():
        if ":" in key:
            _KINDS.setdefault(key.split(":", 1)[0], {})[key] = value
    resources.Store.__setitem__ = set_item
    resources.Store.__delitem__ = del_item
    resources.Store.clear = clear
    resources.StripeObject._api_list_all = classmethod(list_all)


def _app() -> web.Application:
    _disable_persistence()
    _index_store_by_kind()
    from localstripe.server import app  # a module-level singleton Application

    return app


# aiohttp binds an Application to the first event loop that runs it, and
# localstripe's app and store are module globals, so every in-process server
# shares one loop thread that lives as long as the process.
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="localstripe", daemon=True).start()
            _loop = loop
        return _loop


@dataclass
class LocalStripe:
    """A running in-process localstripe."""

    url: str
    port: int
    _runner: web.AppRunner = field(repr=False)

    @property
    def js_url(self) -> str:
        return self.url + JS_PATH

    def stop(self) -> None:
        loop = _background_loop()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=10)


def start_in_thread(port: int = 0, ready_timeout: float = 10.0) -> LocalStripe:
    """Start localstripe on 127.0.0.1:`port` (0 = any free port) in a daemon
    thread; return once it answers HTTP."""
    app = _app()
    loop = _background_loop()

    async def start() -> tuple[web.AppRunner, int]:
        # access_log=None: the app's own logs are enough in test output.
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        return runner, runner.addresses[0][1]

    runner, bound = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=ready_timeout)
    server = LocalStripe(url=f"http://{HOST}:{bound}", port=bound, _runner=runner)
    # Listening is not answering: fetch the fake Stripe.js once to be sure.
    with urllib.request.urlopen(server.js_url, timeout=ready_timeout) as response:
        if b"localstripe" not in response.read():
            raise RuntimeError(f"{server.js_url} did not serve localstripe's Stripe.js")
    return server


def _call(
    method: str,
    url: str,
    payload: dict[str, Any] | None = None,
    secret_key: str | None = None,
    timeout: float = 10.0,
) -> Any:
    # localstripe reads JSON bodies as readily as form bodies, and JSON keeps
    # nested card data simple.
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if secret_key:
        request.add_header("Authorization", f"Bearer {secret_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        raw = error.read()
        error.close()
        try:
            detail: Any = json.loads(raw)
        except ValueError:
            detail = raw.decode(errors="replace")
        raise LocalStripeError(error.code, detail) from None
    return json.loads(body) if body.strip() else None


def register_webhook(
    url_base: str,
    webhook_id: str,
    target_url: str,
    secret: str,
    events: list[str] | None = None,
) -> None:
    """Deliver events to `target_url`, signed with `secret`. Registering the
    same id again replaces it; there is no way to remove one, and reset()
    keeps webhooks."""
    payload: dict[str, Any] = {"url": target_url, "secret": secret}
    if events is not None:
        payload["events"] = events
    _call("POST", f"{url_base}/_config/webhooks/{urllib.parse.quote(webhook_id)}", payload)


def reset(url_base: str) -> None:
    """Forget every object (not the registered webhooks)."""
    _call("DELETE", f"{url_base}/_config/data")


# --- What localstripe's fake Stripe.js does in the browser -----------------


def confirm_card_setup(
    url_base: str,
    publishable_key: str,
    client_secret: str,
    card_number: str,
    *,
    exp_month: int = 12,
    exp_year: int = 2030,
    cvc: str = "123",
    authenticate: bool = True,
) -> dict[str, Any]:
    """Mirror `stripe.confirmCardSetup(client_secret, {payment_method: {card}})`
    from localstripe-v3.js: confirm with raw card data; if 3-D Secure is asked
    for, confirm again (`authenticate`) or cancel, as its modal's buttons do.
    Returns the SetupIntent as JSON; raises LocalStripeError on a decline."""
    setup_intent_id = client_secret.split("_secret_")[0]
    confirm_url = f"{url_base}/v1/setup_intents/{setup_intent_id}/confirm"
    body = {"key": publishable_key, "use_stripe_sdk": True, "client_secret": client_secret}
    card = {"number": card_number, "exp_month": exp_month, "exp_year": exp_year, "cvc": cvc}
    intent = _call("POST", confirm_url, {**body, "payment_method_data": {"type": "card", "card": card}})
    if intent["status"] == "requires_action":
        url = confirm_url if authenticate else confirm_url.replace("/confirm", "/cancel")
        intent = _call("POST", url, body)
    return intent


def confirm_card_payment(
    url_base: str, publishable_key: str, client_secret: str, *, success: bool = True
) -> dict[str, Any]:
    """Mirror `stripe.confirmCardPayment(client_secret)`: the 3-D Secure
    modal's "Complete" (success) or "Fail" button. Returns the PaymentIntent."""
    payment_intent_id = client_secret.split("_secret_")[0]
    query = urllib.parse.urlencode({"success": "true" if success else "false"})
    return _call(
        "POST",
        f"{url_base}/v1/payment_intents/{payment_intent_id}/_authenticate?{query}",
        {"key": publishable_key, "client_secret": client_secret},
    )


def create_card_payment_method(url_base: str, secret_key: str, card_number: str) -> str:
    """A PaymentMethod from raw card data, server-side. localstripe allows it;
    real Stripe refuses raw card numbers from servers. Returns its id."""
    card = {"number": card_number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    method = _call("POST", f"{url_base}/v1/payment_methods", {"type": "card", "card": card}, secret_key)
    return str(method["id"])


def main(argv: list[str]) -> None:
    port = int(argv[1]) if len(argv) > 1 else 8420
    web.run_app(_app(), host=HOST, port=port, print=lambda _: print(f"localstripe on http://{HOST}:{port}"))


if __name__ == "__main__":
    main(sys.argv)

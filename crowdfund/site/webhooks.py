from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, request

from crowdfund.errors import GatewayError, InvalidWebhook
from crowdfund.site.extensions import csrf, rate_limit
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, gateway, now
from crowdfund.workflows.stripe_events import handle_webhook

log = logging.getLogger(__name__)
payments_bp = Blueprint("payments", __name__)

#: Larger bodies are not Stripe events.
MAX_WEBHOOK_BYTES = 256 * 1024


@payments_bp.route("/stripe/webhook", methods=["POST"])
@csrf.exempt  # Stripe signs the request instead; see construct_event.
@rate_limit("RATELIMIT_WEBHOOK", key="address")
def webhook() -> Any:
    if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
        return {"error": "too large"}, 413
    # A chunked body has no Content-Length: read one byte past the cap, never more.
    payload = _read_at_most(request.stream, MAX_WEBHOOK_BYTES + 1)
    if len(payload) > MAX_WEBHOOK_BYTES:
        return {"error": "too large"}, 413
    try:
        event = gateway().construct_event(payload, request.headers.get("Stripe-Signature"))
    except InvalidWebhook as exc:
        log.warning("refused webhook: %s", exc)
        return {"error": "invalid signature"}, 400

    def deferred(exc: GatewayError) -> Any:
        # Stripe could not be asked about the payment: it sends the event again.
        log.warning("webhook %s deferred: %s", event.id, exc.detail or exc)
        return {"error": "try again later"}, 503

    # handle_webhook commits its own steps around the calls to Stripe.
    with on_error(GatewayError, respond=deferred):
        result = handle_webhook(db(), event, gateway(), now=now())
    return {"received": True, "result": result}, 200


def _read_at_most(stream: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = stream.read(min(64 * 1024, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)

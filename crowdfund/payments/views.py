from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, request

from crowdfund.extensions import csrf, rate_limit
from crowdfund.payments.gateway import InvalidWebhook
from crowdfund.payments.services import handle_webhook
from crowdfund.web import db, gateway, now

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
    payload = request.get_data(cache=False)
    try:
        event = gateway().construct_event(payload, request.headers.get("Stripe-Signature"))
    except InvalidWebhook as exc:
        log.warning("refused webhook: %s", exc)
        return {"error": "invalid signature"}, 400
    result = handle_webhook(db(), event, now=now())
    db().commit()
    return {"received": True, "result": result}, 200

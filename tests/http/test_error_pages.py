"""The error pages themselves never fail: a 500 for a logged-in user renders
the page with the user's navigation, though the request's session is gone."""

from __future__ import annotations

import pytest
from flask import Flask

from crowdfund.app import create_app
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_studio_user

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


@pytest.mark.committing  # a second app, with an engine of its own, must see the user
def test_an_unexpected_error_for_a_logged_in_user_is_the_500_page(app: Flask, db: CheckSession) -> None:
    broken_app = create_app("testing", {key: app.config[key] for key in SHARED_KEYS})

    @broken_app.route("/broken")
    def broken() -> str:
        # A view that rolled back (which expires everything the session loaded, the user too), then failed.
        from crowdfund.site.web import db

        db().rollback()
        raise RuntimeError("a bug")

    broken_app.config["PROPAGATE_EXCEPTIONS"] = False
    broken_app.test_client_class = Client
    fan = make_studio_user(db)
    try:
        client = broken_app.test_client()
        client.login(fan.email, PASSWORD)  # type: ignore[attr-defined]
        response = client.get("/broken")
        assert response.status_code == 500
        page = response.get_data(as_text=True)
        assert "Something went wrong" in page and fan.display_name in page
    finally:
        app_services(broken_app).gateway.close()
        app_services(broken_app).engine.dispose()

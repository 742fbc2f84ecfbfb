"""Security headers on every response; templates without inline script; uploaded
files never served as a page."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy import select

from config import BASE_DIR
from crowdfund.app import create_app
from crowdfund.films.states import FilmState
from crowdfund.payouts.models import BoxOfficeReport
from crowdfund.uploads import store_file
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_film, make_studio_user
from tests.http.test_auth import PRODUCTION_PAYOUT_KEY
from tests.http.test_payouts_http import released  # noqa: F401  (fixture)


def _directives(response) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    policy = response.headers["Content-Security-Policy"]
    parts = [p.strip().split() for p in policy.split(";") if p.strip()]
    return {p[0]: p[1:] for p in parts}


def _assert_headers(response) -> None:  # type: ignore[no-untyped-def]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in ("strict-origin-when-cross-origin", "no-referrer")
    csp = _directives(response)
    assert csp["frame-ancestors"] == ["'none'"] or "sandbox" in csp, response.headers[
        "Content-Security-Policy"
    ]
    for sources in csp.values():
        assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources and "*" not in sources


def test_every_kind_of_response_carries_the_headers(client: Client, db: CheckSession, app: Flask) -> None:
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.FUNDING)
    responses = [
        client.get("/"),  # page
        client.get(f"/films/{film.slug}"),
        client.get("/login"),
        client.get("/portfolio"),  # redirect to log in
        client.get("/no-such-page"),  # 404
        client.post("/login", data={"email": "x@example.com"}),  # 400, no CSRF
        client.get("/static/css/app.css"),  # static file
        client.post("/stripe/webhook", data=b"{}", content_type="application/json"),  # JSON 400
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 302, 404, 400, 200, 400]
    for response in responses:
        _assert_headers(response)
        response.close()
    assert "Strict-Transport-Security" not in responses[0].headers  # not outside production


def test_policy_allows_only_our_scripts_and_stripe(client: Client, app: Flask) -> None:
    csp = _directives(client.get("/"))
    stripe_js = re.match(r"https?://[^/]+", app.config["STRIPE_JS_URL"]).group(0)  # type: ignore[union-attr]
    assert csp["script-src"] == ["'self'", stripe_js]
    # localstripe's fake Stripe.js calls its API (same origin as the script) with fetch.
    assert stripe_js in csp["connect-src"] and "'self'" in csp["connect-src"]
    assert csp["default-src"] == ["'self'"] and csp["object-src"] == ["'none'"]
    assert csp["style-src"] == ["'self'"] and csp["form-action"] == ["'self'"]
    assert csp["base-uri"] == ["'none'"]


def test_production_sends_hsts_and_secure_cookies(localstripe) -> None:  # type: ignore[no-untyped-def]
    app = create_app(
        "production",
        {
            "DATABASE_URL": "sqlite://",
            "SECRET_KEY": "x" * 32,
            "RATELIMIT_STORAGE_URI": "memory://",
            "MAIL_DELIVERY_THREAD": False,
            "PAYOUT_DETAILS_KEYS": PRODUCTION_PAYOUT_KEY,
        },
    )
    response = app.test_client().get("/static/css/app.css")
    response.close()
    assert response.headers["Strict-Transport-Security"].startswith("max-age=63072000")
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["REMEMBER_COOKIE_SECURE"]
    csp = _directives(response)
    # Real Stripe: the script from js.stripe.com, its API calls to api.stripe.com.
    assert csp["script-src"] == ["'self'", "https://js.stripe.com"]
    assert "https://api.stripe.com" in csp["connect-src"]
    for name in ("development", "testing"):
        assert not create_app(name, {"DATABASE_URL": "sqlite://"}).config["HSTS_SECONDS"]


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"<[^>]*\sstyle\s*=", re.IGNORECASE)
JS_URL = re.compile(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)


def test_templates_have_no_inline_script_handler_or_style() -> None:
    templates = sorted((BASE_DIR / "templates").rglob("*.html"))
    assert len(templates) > 20
    problems = []
    for path in templates:
        text = path.read_text()
        for name, pattern in (
            ("inline <script>", INLINE_SCRIPT),
            ("event handler", EVENT_HANDLER),
            ("style attribute", STYLE_ATTRIBUTE),
            ("javascript: URL", JS_URL),
        ):
            if pattern.search(text):
                problems.append(f"{path.relative_to(BASE_DIR)}: {name}")
        # <style> blocks only in templates WeasyPrint turns into PDFs, never served as HTML.
        if "<style" in text and not path.name.endswith("_pdf.html"):
            problems.append(f"{path.relative_to(BASE_DIR)}: <style> block")
    assert problems == []


def test_the_checks_catch_what_they_look_for() -> None:
    # So the template scan above cannot pass by matching nothing.
    assert INLINE_SCRIPT.search("<script>alert(1)</script>") and not INLINE_SCRIPT.search(
        '<script src="/a.js">'
    )
    assert EVENT_HANDLER.search('<button type="button" onclick="x()">')
    assert not EVENT_HANDLER.search('<form method="post" action="/x">')
    assert STYLE_ATTRIBUTE.search('<p class="a" style="color:red">') and JS_URL.search(
        '<a href="javascript:x">'
    )


def test_poster_is_served_as_an_image_in_a_sandbox(client: Client, db: CheckSession) -> None:
    from crowdfund.films.states import FilmState
    from tests.factories import make_film, make_studio_user

    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    response = client.get(f"/files/{film.poster_id}")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert _directives(response) == {"default-src": ["'none'"], "sandbox": []}


def test_a_stored_file_that_is_not_an_image_is_never_served_publicly(
    client: Client, db: CheckSession
) -> None:
    html = store_file(db, b"<html><script>alert(document.cookie)</script></html>", "text/html")
    db.commit()
    response = client.get(f"/files/{html.id}")
    assert response.status_code == 404 and b"alert(document.cookie)" not in response.data


def test_box_office_file_downloads_and_is_never_rendered(
    client: Client, other_client: Client, db: CheckSession, released
) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    film, today = released["film"], released["now"].date()
    client.login(released["studio"].email, PASSWORD)
    hostile = b"week,note\n1,<html><body><script>alert(document.cookie)</script></body></html>\n"
    filed = client.post_form(
        f"/studio/films/{film.id}/reports",
        {
            "period_start": today.isoformat(),
            "period_end": (today + timedelta(days=6)).isoformat(),
            "net_receipts": "400.00",
            "note": "Weekend",
            "file": (io.BytesIO(hostile), "numbers.html"),
        },
        content_type="multipart/form-data",
    )
    assert filed.status_code == 303
    report = db.scalar(select(BoxOfficeReport))
    download = client.get(f"/box-office/{report.id}/file")
    assert download.status_code == 200 and download.data == hostile
    assert download.mimetype == "text/csv"
    assert download.headers["Content-Disposition"] == f'attachment; filename="box-office-{report.id}.csv"'
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in _directives(download)
    # The same file is not reachable through the public poster URL.
    assert other_client.get(f"/files/{report.file_id}").status_code == 404


def test_reset_page_does_not_leak_its_token(client: Client) -> None:
    response = client.get("/reset-password/not-a-real-token")
    assert response.status_code == 400
    assert (
        response.headers["Referrer-Policy"] == "no-referrer"
        and response.headers["Cache-Control"] == "no-store"
    )


def test_static_scripts_exist_for_every_script_tag() -> None:
    # Every <script src> in the templates points at our static files or at Stripe.js.
    sources = set()
    for path in (BASE_DIR / "templates").rglob("*.html"):
        sources.update(re.findall(r'<script src="([^"]+)"', path.read_text()))
    for source in sources:
        match = re.search(r"filename='([^']+)'", source)
        assert match or "stripe_js_url" in source, source
        if match:
            assert Path(BASE_DIR / "static" / match.group(1)).is_file(), source

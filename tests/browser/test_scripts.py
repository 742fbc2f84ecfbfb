"""Our static scripts in a real browser: the film page's "your time" note in the
viewer's own zone, and no script error on the main pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session

from crowdfund.films.states import FilmState
from tests.browser.test_purchase import fill_card, log_in, open_checkout
from tests.factories import GOOD_CARD, make_film, make_studio_user, make_user
from tests.rewards_factories import film_with_tiers

pytestmark = pytest.mark.browser


def zoned_page(browser, live_server: str, zone: str) -> Iterator[tuple[object, list[str]]]:  # type: ignore[no-untyped-def]
    """A page whose browser runs in `zone` (en-US), with every uncaught script error collected."""
    context = browser.new_context(base_url=live_server, timezone_id=zone, locale="en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page, errors
    finally:
        context.close()


@pytest.fixture
def tokyo(browser, live_server: str):  # type: ignore[no-untyped-def]
    yield from zoned_page(browser, live_server, "Asia/Tokyo")


@pytest.fixture
def new_york(browser, live_server: str):  # type: ignore[no-untyped-def]
    yield from zoned_page(browser, live_server, "America/New_York")


def expected_local(deadline: datetime, zone: str, zone_label: str) -> str:
    """What en-US Chromium writes for year/month/day/hour/minute + short zone name."""
    local = deadline.astimezone(ZoneInfo(zone))
    return f"{local:%b} {local.day}, {local.year}, {local.hour % 12 or 12}:{local:%M} {local:%p} {zone_label}"


def deadline_in(days: int) -> datetime:
    # 06:30 UTC is 15:30 in Tokyo and 01:30 (or 02:30 in summer) in New York:
    # a different hour and, in New York, a different calendar day from UTC's.
    return (datetime.now(UTC) + timedelta(days=days)).replace(hour=6, minute=30, second=0, microsecond=0)


@pytest.mark.parametrize(("fixture", "zone"), [("tokyo", "Asia/Tokyo"), ("new_york", "America/New_York")])
def test_film_page_shows_the_deadline_in_the_viewers_time_zone(
    request, db: Session, fixture: str, zone: str
) -> None:  # type: ignore[no-untyped-def]
    page, errors = request.getfixturevalue(fixture)
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, title="Clockwork", deadline=deadline_in(40))
    local = film.deadline.astimezone(ZoneInfo(zone))
    label = "GMT+9" if zone == "Asia/Tokyo" else local.strftime("%Z")  # en-US: "EST"/"EDT", Tokyo has none
    page.goto(f"/films/{film.slug}")
    page.wait_for_load_state("load")  # deferred scripts have run
    assert errors == []
    note = page.locator("time.localtime + span.muted")
    assert note.text_content() == f" (your time: {expected_local(film.deadline, zone, label)})"


def test_no_script_errors_on_the_main_pages(tokyo, db: Session) -> None:  # type: ignore[no-untyped-def]
    page, errors = tokyo
    film = film_with_tiers(db, make_studio_user(db), title="Quiet Pages")  # tiers.js runs too
    fan = make_user(db, "quiet@example.com")
    for path in ("/", "/films", f"/films/{film.slug}"):
        page.goto(path)
        page.wait_for_load_state("load")
        assert errors == [], (path, errors)
    log_in(page, fan.email)
    open_checkout(page, film, 2)  # the checkout, with Stripe.js and its countdown
    assert errors == [], ("checkout", errors)
    fill_card(page, GOOD_CARD)
    page.get_by_role("button", name="Pay").click()
    page.get_by_role("heading", name="Receipt").wait_for()  # the order page, with its countdown
    assert errors == [], ("order page", errors)
    page.goto(f"/films/{film.slug}")  # the buy panel's tier script, for a signed-in fan
    page.get_by_label("Number of stakes").select_option("5")
    assert "you reach the 5+ stakes tier" in page.locator("#tier-reach").text_content()
    page.goto("/portfolio")
    page.get_by_role("heading", name="Your portfolio").wait_for()
    assert errors == [], ("portfolio", errors)

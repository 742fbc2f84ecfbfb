"""Admin pages: the review queue's title, the review page shows what the fans
will see (reward tiers, the synopsis's line breaks), audit paging keeps every
filter including the dates."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from crowdfund import audit
from crowdfund.accounts.models import Role
from crowdfund.films.states import FilmState
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_film, make_studio_user, make_user
from tests.rewards_factories import film_with_tiers


def admin_client(client: Client, db: CheckSession) -> Client:
    client.login(make_user(db, roles=(Role.ADMIN,)).email, PASSWORD)
    return client


def test_the_review_queue_title_is_only_its_title(client: Client, db: CheckSession) -> None:
    make_film(db, make_studio_user(db), FilmState.IN_REVIEW, title="Queued Film")
    page = admin_client(client, db).get("/admin/reviews/").get_data(as_text=True)
    assert re.search(r"<title>(.*?)</title>", page, re.S).group(1) == "Review queue · Reelshare"
    assert page.count("<table") == 1 and "Queued Film" in page


def test_the_review_page_shows_tiers_and_the_synopsis_line_breaks(client: Client, db: CheckSession) -> None:
    studio = make_studio_user(db)
    film = film_with_tiers(db, studio, synopsis="First paragraph.\nSecond line.\n\n<b>Third</b>")
    page = admin_client(client, db).get(f"/admin/reviews/{film.id}").get_data(as_text=True)
    assert "First paragraph.<br>Second line.<br><br>&lt;b&gt;Third&lt;/b&gt;" in page
    tiers = page.split("<h2>Reward tiers</h2>")[1].split("</section>")[0]
    assert (
        "2 or more" in tiers
        and "5 or more" in tiers
        and "10 or more" in tiers
        and "Premiere invitation" in tiers
    )
    plain = make_film(db, studio, FilmState.IN_REVIEW, title="Fish & <Chips>")
    page = client.get(f"/admin/reviews/{plain.id}").get_data(as_text=True)
    assert "No reward tiers" in page
    assert "<title>Review Fish &amp; &lt;Chips&gt; · Reelshare</title>" in page


def test_audit_paging_keeps_the_date_filter(client: Client, db: CheckSession) -> None:
    admin = make_user(db, roles=(Role.ADMIN,))
    day = datetime(2026, 6, 15, 12, tzinfo=UTC)
    for n in range(120):  # three pages on one day, one entry the day after
        audit.record(db, action="test.event", object_type="thing", object_id=str(n), now=day, actor=admin)
    audit.record(
        db,
        action="test.event",
        object_type="thing",
        object_id="later",
        now=day + timedelta(days=1),
        actor=admin,
    )
    db.commit()
    client.login(admin.email, PASSWORD)
    first = client.get("/admin/audit?action=test.event&since=2026-06-15&until=2026-06-15").get_data(
        as_text=True
    )
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "since=2026-06-15" in older and "until=2026-06-15" in older and "action=test.event" in older
    second = client.get(older).get_data(as_text=True)
    newer = re.search(r'rel="prev" href="([^"]+)"', second).group(1).replace("&amp;", "&")
    assert "since=2026-06-15" in newer and "until=2026-06-15" in newer
    third = client.get(re.search(r'rel="next" href="([^"]+)"', second).group(1).replace("&amp;", "&"))
    body = third.get_data(as_text=True)
    assert "thing 0" in body and "thing later" not in body and 'rel="next"' not in body

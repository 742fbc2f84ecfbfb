"""Rewards through HTTP: tiers, screenings, tickets (page, QR, PDF), booking, check-in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from crowdfund.films.states import FilmState
from crowdfund.rewards.models import CheckInAttempt, RewardTier, Screening, Ticket
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, buy, hold, make_film, make_studio_user, make_user
from tests.rewards_factories import add_screening, close_after_deadline, film_with_tiers, give_ticket


def test_studio_sets_tiers_while_draft_only(client: Client, db: CheckSession) -> None:
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.DRAFT, per_backer_limit=10)
    client.login(studio.email, PASSWORD)
    url = f"/studio/films/{film.id}/tiers"
    ok = client.post_form(url, {"tier-min_stakes": "2", "tier-tickets": "1", "tier-extras": ""})
    assert ok.status_code == 303
    bad = client.post_form(url, {"tier-min_stakes": "lots", "tier-tickets": "1"})
    assert bad.status_code == 400 and "Not a valid integer value." in bad.get_data(as_text=True)
    fewer = client.post_form(url, {"tier-min_stakes": "5", "tier-tickets": "0", "tier-extras": "Poster"})
    assert fewer.status_code == 400 and "a higher tier must give at least as many" in fewer.get_data(
        as_text=True
    )
    over = client.post_form(url, {"tier-min_stakes": "11", "tier-tickets": "2"})
    assert over.status_code == 400 and "per-backer limit" in over.get_data(as_text=True)
    page = client.get(f"/studio/films/{film.id}").get_data(as_text=True)
    assert "2 or more" in page
    db.reread()
    tier = db.scalars(select(RewardTier).where(RewardTier.film_id == film.id)).one()
    client.post_form(f"/studio/films/{film.id}/submit")
    frozen = client.post_form(url, {"tier-min_stakes": "5", "tier-tickets": "2"})
    assert frozen.status_code == 400 and "fixed once the film leaves draft" in frozen.get_data(as_text=True)
    deleted = client.post_form(f"/studio/films/{film.id}/tiers/{tier.id}/delete", follow_redirects=True)
    assert "fixed once the film leaves draft" in deleted.get_data(as_text=True)
    db.reread()
    rival = make_studio_user(db, "Rival")
    client.post_form("/logout")
    client.login(rival.email, PASSWORD)
    assert client.post_form(url, {"tier-min_stakes": "3", "tier-tickets": "1"}).status_code == 404
    assert client.post_form(f"/studio/films/{film.id}/tiers/{tier.id}/delete").status_code == 404


def test_film_page_and_checkout_show_the_tier_reached(client: Client, db: CheckSession, app: Flask) -> None:
    film = film_with_tiers(db, make_studio_user(db))
    fan = make_user(db)
    buy(db, app, fan, film, 4)
    client.login(fan.email, PASSWORD)
    page = client.get(f"/films/{film.slug}").get_data(as_text=True)
    assert "Reward tiers by paid stakes" in page and "Premiere invitation" in page
    # 4 paid + 1 selected = 5: the 5+ tier, shown without script.
    assert re.search(
        r"With 5 paid stakes you reach the <strong>5\+ stakes</strong> tier:\s+2 screening tickets", page
    )
    assert 'data-paid="4"' in page and "js/tiers.js" in page and "<script>" not in page
    order = hold(db, fan, film, 5)
    checkout = client.get(f"/orders/{order.reference}/checkout").get_data(as_text=True)
    assert (
        "Reward tier" in checkout
        and "With 9 paid stakes" in checkout
        and "1 more reach the 10+ stakes tier" in checkout
    )


def test_schedule_screening_needs_a_funded_film_and_good_input(client: Client, db: CheckSession) -> None:
    studio = make_studio_user(db)
    funding = make_film(db, studio, FilmState.FUNDING)
    funded = make_film(db, studio, FilmState.FUNDED, timezone="Europe/Lisbon")
    client.login(studio.email, PASSWORD)
    start = (datetime.now(UTC) + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M")
    data = {
        "screening-cinema": "Cinema São Jorge",
        "screening-city": "Lisbon",
        "screening-starts_at": start,
        "screening-seats": "120",
        "screening-min_tier_id": "0",
    }
    early = client.post_form(f"/studio/films/{funding.id}/screenings", data)
    assert early.status_code == 400 and "once the film is funded" in early.get_data(as_text=True)
    past = client.post_form(
        f"/studio/films/{funded.id}/screenings", {**data, "screening-starts_at": "2020-01-01T20:00"}
    )
    assert past.status_code == 400 and "must start in the future" in past.get_data(as_text=True)
    seats = client.post_form(f"/studio/films/{funded.id}/screenings", {**data, "screening-seats": "0"})
    assert seats.status_code == 400 and "Between 1 and 100,000." in seats.get_data(as_text=True)
    ok = client.post_form(f"/studio/films/{funded.id}/screenings", data)
    assert ok.status_code == 303
    db.reread()
    screening = db.scalars(select(Screening)).one()
    assert screening.seats == 120 and screening.min_tier_id is None
    # Entered in the film's zone: Lisbon is UTC+0 or +1.
    entered = datetime.strptime(start, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
    assert timedelta(0) <= entered - screening.starts_at <= timedelta(hours=1)
    page = client.get(f"/studio/films/{funded.id}").get_data(as_text=True)
    assert "Cinema São Jorge, Lisbon" in page and "0 / 120" in page


@pytest.fixture
def ticket_world(db: CheckSession, app: Flask):  # type: ignore[no-untyped-def]
    studio = make_studio_user(db, "Door Studio")
    film = film_with_tiers(db, studio, funding_goal_cents=10_000)
    fan = make_user(db, "holder@example.com", name="Hana Holder")
    buy(db, app, fan, film, 2)
    close_after_deadline(db, app, film)
    db.reread()
    ticket = db.scalars(select(Ticket).where(Ticket.user_id == fan.id)).one()
    screening = add_screening(db, film, seats=1, cinema="Rio")
    return {"studio": studio, "film": film, "fan": fan, "ticket": ticket, "screening": screening}


def test_ticket_page_qr_pdf_only_for_the_backer(
    client: Client, other_client: Client, db: CheckSession, ticket_world
) -> None:  # type: ignore[no-untyped-def]
    ticket = ticket_world["ticket"]
    client.login(ticket_world["fan"].email, PASSWORD)
    listing = client.get("/tickets").get_data(as_text=True)
    assert "data:image/svg+xml" in listing and ticket.code[:5] in listing
    page = client.get(f"/tickets/{ticket.id}").get_data(as_text=True)
    assert "Hana Holder" in page and "Book this screening" in page and "Rio, Lisbon" in page
    qr = client.get(f"/tickets/{ticket.id}/qr.svg")
    assert qr.status_code == 200 and qr.mimetype == "image/svg+xml" and b"<svg" in qr.data
    pdf = client.get(f"/tickets/{ticket.id}/ticket.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    other_client.login(make_user(db).email, PASSWORD)
    for url in (f"/tickets/{ticket.id}", f"/tickets/{ticket.id}/qr.svg", f"/tickets/{ticket.id}/ticket.pdf"):
        assert other_client.get(url).status_code == 404, url
    assert (
        other_client.post_form(
            f"/tickets/{ticket.id}/book", {"screening_id": str(ticket_world["screening"].id)}
        ).status_code
        == 404
    )


def test_book_full_screening_and_bad_input(client: Client, db: CheckSession, ticket_world) -> None:  # type: ignore[no-untyped-def]
    ticket, screening, film = ticket_world["ticket"], ticket_world["screening"], ticket_world["film"]
    client.login(ticket_world["fan"].email, PASSWORD)
    assert client.post_form(f"/tickets/{ticket.id}/book", {"screening_id": "x"}).status_code == 400
    assert client.post_form(f"/tickets/{ticket.id}/book", {"screening_id": "999999"}).status_code == 404
    stranger = give_ticket(db, film, make_user(db))
    from crowdfund.rewards.bookings import book_ticket

    book_ticket(db, stranger.user, stranger.id, screening.id, now=datetime.now(UTC))  # the only seat
    db.commit()
    full = client.post_form(f"/tickets/{ticket.id}/book", {"screening_id": str(screening.id)})
    assert full.status_code == 409 and "That screening is full" in full.get_data(as_text=True)
    bigger = add_screening(db, film, seats=50, cinema="Odeon")
    booked = client.post_form(
        f"/tickets/{ticket.id}/book", {"screening_id": str(bigger.id)}, follow_redirects=True
    )
    assert "Booked." in booked.get_data(as_text=True) and "Change booking" in booked.get_data(as_text=True)
    given_up = client.post_form(f"/tickets/{ticket.id}/unbook", {}, follow_redirects=True)
    assert "Booking given up" in given_up.get_data(as_text=True)
    db.reread()
    assert db.get(Screening, bigger.id).booked == 0 and db.get(Ticket, ticket.id).status == "issued"


def test_check_in_form_and_json_scanner(
    client: Client, other_client: Client, db: CheckSession, app: Flask, ticket_world
) -> None:  # type: ignore[no-untyped-def]
    ticket, screening = ticket_world["ticket"], ticket_world["screening"]
    client.login(ticket_world["fan"].email, PASSWORD)
    client.post_form(f"/tickets/{ticket.id}/book", {"screening_id": str(screening.id)})
    other_client.login(ticket_world["studio"].email, PASSWORD)
    url = f"/studio/screenings/{screening.id}/check-in"
    assert other_client.get(url).status_code == 200
    admitted = other_client.post_form(url, {"code": ticket.code[:10] + "-" + ticket.code[10:]})
    assert admitted.status_code == 200 and "Admitted" in admitted.get_data(as_text=True)
    again = other_client.post_form(url, {"code": ticket.code})
    assert again.status_code == 409 and "already used at" in again.get_data(as_text=True)
    assert other_client.post_form(url, {"code": ""}).status_code == 400
    token = other_client.csrf_token()
    headers = {"X-CSRFToken": token}
    json_url = url + ".json"
    made_up = other_client.post(json_url, json={"code": "AAAAA-BBBBB-CCCCC-DDDDD"}, headers=headers)
    assert made_up.status_code == 409 and made_up.json["result"] == "unknown" and made_up.json["ok"] is False
    used = other_client.post(json_url, json={"code": ticket.code}, headers=headers)
    assert (
        used.status_code == 409
        and used.json["result"] == "already_used"
        and "Rio, Lisbon" in used.json["message"]
    )
    assert other_client.post(json_url, json={"nope": 1}, headers=headers).status_code == 400
    assert other_client.post(json_url, json={"code": ticket.code}).status_code == 400  # no CSRF token
    db.reread()
    assert [a.result for a in db.scalars(select(CheckInAttempt).order_by(CheckInAttempt.id))] == [
        "admitted",
        "already_used",
        "unknown",
        "already_used",
    ]
    page = other_client.get(f"/studio/films/{ticket_world['film'].id}").get_data(as_text=True)
    assert "1 / 1" in page
    rival = make_studio_user(db, "Rival")
    other_client.post_form("/logout")
    other_client.login(rival.email, PASSWORD)
    assert other_client.get(url).status_code == 404
    assert (
        other_client.post(
            json_url, json={"code": ticket.code}, headers={"X-CSRFToken": other_client.csrf_token()}
        ).status_code
        == 404
    )

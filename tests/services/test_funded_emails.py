"""queue_funded_emails: every backer of a funded film is told once, one
e-mail per backer (not per order), in batches, whatever the film's tiers."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from crowdfund.accounts.models import User
from crowdfund.errors import Conflict
from crowdfund.films import services as films
from crowdfund.films.states import FilmState
from crowdfund.funding.notices import queue_funded_emails
from crowdfund.rewards.tiers import film_tiers
from tests.conftest import CheckSession, MailCapture
from tests.factories import buy, make_film, make_studio_user, make_user


def test_each_backer_of_a_funded_film_without_tiers_is_told_once(
    app: Flask, db: CheckSession, mail: MailCapture
) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDING, stake_cap=20, per_backer_limit=5)
    first = make_user(db, "first@example.com", name="First")
    second = make_user(db, "second@example.com", name="Second")
    make_user(db, "bystander@example.com")
    db.get(User, second.id).time_zone = "Asia/Tokyo"  # type: ignore[union-attr]
    db.commit()
    buy(db, app, first, film, 1)
    buy(db, app, first, film, 2)  # two orders: still one e-mail
    buy(db, app, second, film, 1)
    with pytest.raises(Conflict):  # not funded yet
        queue_funded_emails(db, film.id)
    films.change_film_state(db, film, FilmState.FUNDED, now=datetime.now(UTC))
    db.commit()
    assert film_tiers(db, film.id) == []

    # One batch at a time, as the batch task calls it.
    assert queue_funded_emails(db, film.id, batch_size=1) == (1, first.id)
    db.commit()
    assert queue_funded_emails(db, film.id, after_user_id=first.id, batch_size=1) == (1, second.id)
    db.commit()
    assert queue_funded_emails(db, film.id, after_user_id=second.id, batch_size=1) is None
    # Run again from the start (a retried task): nothing new is queued.
    assert queue_funded_emails(db, film.id) == (0, second.id)
    db.commit()

    funded = [m for m in mail.messages if "is funded" in m["Subject"]]
    assert [m["To"] for m in funded] == ["first@example.com", "second@example.com"]
    to_first = funded[0]
    assert to_first["Subject"] == f"{film.title} is funded: thank you for backing it"
    body = to_first.get_content()
    assert "Your stakes: 3, for $150.00." in body
    assert f"{app.config['PUBLIC_URL']}/films/{film.slug}" in body
    assert f"{app.config['PUBLIC_URL']}/portfolio" in body
    db.refresh(film)
    assert film.decided_at is not None
    assert f"{film.decided_at:%d %b %Y, %H:%M} UTC" in body
    tokyo = film.decided_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert f"{tokyo:%d %b %Y, %H:%M} JST (Asia/Tokyo)" in funded[1].get_content()
    assert mail.to("bystander@example.com") == []

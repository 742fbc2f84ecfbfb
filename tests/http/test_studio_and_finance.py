import csv
import io

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund import ledger
from crowdfund.accounts.models import Role
from crowdfund.films.states import FilmState
from crowdfund.ledger import JournalEntry
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, buy, make_film, make_studio_user, make_user


def test_studio_sees_sales_chart_and_backers_csv(client: Client, db: CheckSession, app: Flask) -> None:
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.FUNDING, stake_cap=20, per_backer_limit=5)
    buy(db, app, make_user(db, "first@example.com", name='=HYPERLINK("http://evil")'), film, 3)
    buy(db, app, make_user(db, "second@example.com", name="Ümit Ünal"), film, 2)
    client.login(studio.email, PASSWORD)
    page = client.get(f"/studio/films/{film.id}").get_data(as_text=True)
    assert "<strong>2</strong> backers" in page and "<strong>5</strong> stakes sold" in page
    assert "<svg" in page and "Raised over time: from $250.00" in page
    response = client.get(f"/studio/films/{film.id}/backers.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    body = response.get_data()
    assert body.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == ["name", "email", "stakes", "amount_usd"]
    assert sorted(rows[1:]) == sorted(
        [
            ['\'=HYPERLINK("http://evil")', "first@example.com", "3", "150.00"],
            ["Ümit Ünal", "second@example.com", "2", "100.00"],
        ]
    )
    other = make_studio_user(db, "Rival")
    client.post_form("/logout")
    client.login(other.email, PASSWORD)
    assert client.get(f"/studio/films/{film.id}/backers.csv").status_code == 404


def test_finance_film_page_reconciles_and_flags_differences(
    client: Client, db: CheckSession, app: Flask
) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    buy(db, app, make_user(db), film, 2)
    finance = make_user(db, roles=(Role.FINANCE,))
    client.login(finance.email, PASSWORD)
    page = client.get(f"/finance/films/{film.id}").get_data(as_text=True)
    assert "Ledger and orders agree" in page
    assert 'Captured (payments)</th><td class="num">$100.00' in page
    assert 'In escrow</th><td class="num">$100.00' in page
    # Someone deletes a payment entry behind the app's back: the page says so and names the order.
    entry = db.scalars(select(JournalEntry).where(JournalEntry.kind == "payment")).one()
    reference = entry.memo.split()[-1]
    for line in entry.lines:
        db.delete(line)
    db.delete(entry)
    db.commit()
    page = client.get(f"/finance/films/{film.id}").get_data(as_text=True)
    assert "Differences found" in page
    assert f"Order {reference} is paid but has no payment entry." in page
    assert ledger.trial_balance(db) == 0


def test_fans_cannot_open_finance_pages(client: Client, db: Session) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    fan = make_user(db)
    client.login(fan.email, PASSWORD)
    assert client.get(f"/finance/films/{film.id}").status_code == 403


def test_cli_creates_staff_accounts(app: Flask, db: CheckSession) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "Boss@Example.com", "--role", "finance"])
    assert result.exit_code == 0, result.output
    assert "Password: " in result.output
    studio = runner.invoke(
        args=[
            "users",
            "create",
            "maker@example.com",
            "--role",
            "studio",
            "--studio",
            "New Co",
            "--password",
            PASSWORD,
        ]
    )
    assert studio.exit_code == 0, studio.output
    again = runner.invoke(args=["users", "create", "boss@example.com", "--role", "admin"])
    assert again.exit_code != 0 and "already exists" in again.output
    missing = runner.invoke(args=["users", "create", "x@example.com", "--role", "studio"])
    assert missing.exit_code != 0
    from crowdfund.accounts.users import find_user_by_email

    assert find_user_by_email(db, "boss@example.com").role_names == {"finance"}
    assert find_user_by_email(db, "maker@example.com").role_names == {"studio"}

from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from crowdfund.accounts import logins, registration, studios, users
from crowdfund.accounts import roles as account_roles
from crowdfund.accounts.models import Role
from crowdfund.errors import Conflict, DomainError
from crowdfund.site.web import app_services
from tests.factories import PASSWORD, make_studio_user, make_user


def sign_up(db: Session, email: str, password: str, name: str):  # type: ignore[no-untyped-def]
    return registration.sign_up(
        db,
        email,
        password,
        name,
        now=datetime.now(UTC),
        secret_key="k" * 32,
        verify_link_for=lambda token: f"https://x.test/verify-email/{token}",
        owner_links={"login_link": "https://x.test/login", "reset_link": "https://x.test/forgot-password"},
        verify_max_age_seconds=3600,
    )


def test_sign_up_makes_an_unverified_fan_with_a_slow_hash(db: Session) -> None:
    user = sign_up(db, "  Ann@Example.COM ", PASSWORD, "Ann")
    db.commit()
    assert user.email == "ann@example.com"
    assert user.role_names == {"fan"}
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert user.email_verified_at is None and not user.email_verified


def test_email_unique_regardless_of_case(db: Session) -> None:
    original = make_user(db, "bob@example.com")
    with pytest.raises(Conflict):
        users.create_user(db, "BOB@example.com", PASSWORD, "Bob again")
    # Sign-up makes no second account and does not say so (the owner is e-mailed instead).
    assert sign_up(db, "BOB@example.com", PASSWORD, "Bob again") is None
    db.commit()
    assert users.find_user_by_email(db, "bob@example.com").id == original.id


@pytest.mark.parametrize("email", ["", "not-an-email", "a@", "@b.com", "x" * 300 + "@example.com"])
def test_invalid_email_refused(db: Session, email: str) -> None:
    with pytest.raises(DomainError):
        sign_up(db, email, PASSWORD, "X")


@pytest.mark.parametrize("password", ["short", "1234567890123", "aaaaaaaaaaaa", "x" * 300])
def test_weak_or_huge_password_refused(db: Session, password: str) -> None:
    with pytest.raises(DomainError):
        sign_up(db, "c@example.com", password, "C")


def test_authenticate(db: Session) -> None:
    user = make_user(db, "dee@example.com")
    assert users.authenticate(db, "DEE@example.com", PASSWORD).id == user.id
    assert users.authenticate(db, "dee@example.com", "wrong password!") is None
    assert users.authenticate(db, "nobody@example.com", PASSWORD) is None


def test_session_token_changes_with_roles(db: Session) -> None:
    admin = make_user(db, roles=(Role.ADMIN,))
    user = make_user(db)
    token = user.get_id()
    assert users.load_user(db, token).id == user.id
    account_roles.grant_role(db, user, "finance")
    db.commit()
    assert user.has_role("finance")
    assert users.load_user(db, token) is None
    account_roles.revoke_role(db, user, "finance", acting_user=admin)
    assert not user.has_role("finance")
    with pytest.raises(DomainError):
        account_roles.revoke_role(db, admin, "admin", acting_user=admin)
    assert users.load_user(db, "garbage") is None


def test_studio_role_comes_from_membership(db: Session) -> None:
    member = make_studio_user(db, "Blue Door Films")
    assert member.role_names == {"studio"}
    studios.set_studio(db, member, None)
    db.commit()
    assert member.role_names == set()


def test_loaded_user_knows_roles_and_studio_and_sees_changes_made_in_the_same_session(
    db: Session, app: Flask
) -> None:
    admin = make_user(db, roles=(Role.ADMIN, Role.FAN))
    member = make_studio_user(db, "Red Lantern")
    studio_id = member.studio_id
    with app_services(app).sessions() as fresh:
        loaded = users.load_user(fresh, admin.get_id())
        assert loaded.role_names == {"admin", "fan"} and loaded.studio_id is None
        as_member = users.load_user(fresh, member.get_id())
        assert as_member.role_names == {"studio"} and as_member.studio_id == studio_id
        # An admin changing their own roles or studio in this request sees the change at once.
        account_roles.grant_role(fresh, loaded, "finance")
        assert loaded.has_role("finance")
        studios.set_studio(fresh, loaded, studios.get_or_create_studio(fresh, "Red Lantern"))
        assert loaded.studio_id == studio_id and loaded.has_role("studio")
        studios.set_studio(fresh, as_member, None, acting_user=loaded)
        assert as_member.studio_id is None and as_member.role_names == set()


@pytest.mark.committing  # threads, each on a connection of its own
def test_one_remember_token_used_by_parallel_requests_is_replaced_once(db: Session, app: Flask) -> None:
    """A browser opening with several tabs sends one remember token in parallel
    requests: every one logs in, exactly one issues the successor, none fails."""
    import threading
    from datetime import timedelta

    from sqlalchemy import func, select

    from crowdfund.accounts.models import RememberToken

    user = make_user(db)
    now = datetime.now(UTC)
    raw, _ = logins.issue_remember_token(db, user, now=now, lifetime=timedelta(days=30))
    db.commit()
    sessionmaker = app_services(app).sessions
    start = threading.Barrier(8)
    results: list[object] = []
    lock = threading.Lock()

    def use() -> None:
        with sessionmaker() as session:
            start.wait()
            try:
                login = logins.use_remember_token(session, raw, now=now)
                session.commit()
                result: object = login
            except Exception as exc:  # noqa: BLE001 - the test reports any failure
                result = exc
        with lock:
            results.append(result)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, logins.RememberedLogin) for r in results), results
    assert all(r.user_token == user.get_id() for r in results)  # type: ignore[union-attr]
    assert len([r for r in results if r.new_token]) == 1  # type: ignore[union-attr]
    assert (
        db.scalar(select(func.count()).select_from(RememberToken)) == 2
    )  # the old one (replaced) and its successor


def test_a_session_token_with_non_ascii_digits_is_nobody(db) -> None:  # type: ignore[no-untyped-def]
    from crowdfund.accounts.users import load_user

    user = make_user(db)
    assert (
        load_user(db, f"{user.id}.\u00b2") is None and load_user(db, f"\u0661.{user.session_version}") is None
    )

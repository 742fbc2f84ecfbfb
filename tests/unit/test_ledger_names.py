"""Ledger entry kinds, keys and account names are stored data (journal_entries.kind
and .key, journal_lines.account, the ledger export): these tests pin every string,
so renaming a member or a builder cannot silently change what is stored."""

from __future__ import annotations

import pytest

from crowdfund.ledger import Account, EntryKind, is_account

HISTORICAL_KINDS = {
    "PAYMENT": "payment",
    "REFUND_DECIDED": "refund_decided",
    "REFUND": "refund",
    "ESCROW_RELEASE": "escrow_release",
    "PAYOUT_POOL": "payout_pool",
    "PAYOUT_PAID": "payout_paid",
    "UNMATCHED_PAYMENT": "unmatched_payment",
    "UNMATCHED_REFUND": "unmatched_refund",
}

HISTORICAL_KEYS = [
    (EntryKind.PAYMENT, 12, "payment:12"),
    (EntryKind.REFUND_DECIDED, 12, "refund-decided:12"),
    (EntryKind.REFUND, 12, "refund:12"),
    (EntryKind.ESCROW_RELEASE, 3, "escrow-release:3"),
    (EntryKind.PAYOUT_POOL, 7, "payout-pool:7"),
    (EntryKind.PAYOUT_PAID, 7, "payout-paid:7"),
    (EntryKind.UNMATCHED_PAYMENT, 5, "unmatched-payment:5"),
    (EntryKind.UNMATCHED_REFUND, 5, "unmatched-refund:5"),
]


def test_entry_kind_values_are_the_historical_strings() -> None:
    assert {kind.name: kind.value for kind in EntryKind} == HISTORICAL_KINDS
    assert all(type(str(kind)) is str and str(kind) == kind.value for kind in EntryKind)


@pytest.mark.parametrize(("kind", "subject_id", "key"), HISTORICAL_KEYS)
def test_every_kind_builds_its_historical_key(kind: EntryKind, subject_id: int, key: str) -> None:
    assert kind.key(subject_id) == key
    assert key.startswith(kind.key_prefix) and key[len(kind.key_prefix) :] == str(subject_id)


def test_every_kind_has_a_pinned_key() -> None:
    assert {kind for kind, _, _ in HISTORICAL_KEYS} == set(EntryKind)


def test_keys_of_different_kinds_never_collide() -> None:
    # "refund:" must not be a prefix of another kind's keys, or a refund key
    # check would accept them.
    prefixes = [kind.key_prefix for kind in EntryKind]
    assert not [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)]


def test_fixed_account_values_are_the_historical_strings() -> None:
    assert {account.name: account.value for account in Account} == {
        "BACKER_CASH": "backer_cash",
        "PLATFORM_FEES": "platform_fees",
        "UNMATCHED_PAYMENTS": "unmatched_payments",
        "PAID_OUT": "paid_out",
        "WITHDRAWALS_IN_FLIGHT": "withdrawals_in_flight",
    }


def test_account_builders_make_the_historical_names() -> None:
    assert Account.escrow(4) == "escrow:4"
    assert Account.refunds_payable(4) == "refunds_payable:4"
    assert Account.payouts_payable(4) == "payouts_payable:4"
    assert Account.studio(9) == "studio:9"
    assert Account.backer_balance(21) == "backer_balance:21"


@pytest.mark.parametrize(
    "name",
    [
        "backer_cash",
        "platform_fees",
        "unmatched_payments",
        "paid_out",
        "withdrawals_in_flight",
        "escrow:4",
        "refunds_payable:4",
        "payouts_payable:4",
        "studio:9",
        "backer_balance:21",
    ],
)
def test_every_built_account_is_an_account(name: str) -> None:
    assert is_account(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "cash",
        "escrow",
        "escrow:",
        "escrow:x",
        "escrow:4:5",
        "escrow:²",
        "Backer_cash",
        "payment:4",
        "backer_cash:4",
    ],
)
def test_anything_else_is_not_an_account(name: str) -> None:
    assert not is_account(name)

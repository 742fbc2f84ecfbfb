from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crowdfund.payouts.waterfall import Terms, waterfall

TERMS = Terms(recoup_share_bps=5000, recoup_multiple_bps=12000, profit_share_bps=1000)


def test_first_period_inside_the_recoup_tier() -> None:
    # K = $1,000, T = $1,200. R = $1,000: half is $500, well under the target.
    result = waterfall(TERMS, reported_cents=100_000, principal_cents=100_000, already_paid_cents=0)
    assert (result.target_cents, result.tier1_cents, result.receipts_used_by_tier1_cents) == (
        120_000,
        50_000,
        100_000,
    )
    assert (result.tier2_cents, result.pool_cents) == (0, 50_000)


def test_period_crossing_the_target() -> None:
    # P = $500 already paid; $700 left to the target. R = $3,000: half is $1,500 > $700,
    # so tier1 = $700 uses ceil(700 / 0.5) = $1,400 of receipts; 10% of the other $1,600 = $160.
    result = waterfall(TERMS, reported_cents=300_000, principal_cents=100_000, already_paid_cents=50_000)
    assert (result.tier1_cents, result.receipts_used_by_tier1_cents) == (70_000, 140_000)
    assert (result.tier2_cents, result.pool_cents) == (16_000, 86_000)
    assert result.recouped_after_cents == 136_000


def test_after_recoupment_only_the_profit_share() -> None:
    result = waterfall(TERMS, reported_cents=100_000, principal_cents=100_000, already_paid_cents=120_000)
    assert (result.tier1_cents, result.receipts_used_by_tier1_cents, result.tier2_cents) == (0, 0, 10_000)


def test_rounding_uses_ceil_for_receipts_used() -> None:
    terms = Terms(recoup_share_bps=3333, recoup_multiple_bps=10000, profit_share_bps=2500)
    # T - P = 1 cent; floor(1000 * 0.3333) = 333 > 1 -> tier1 = 1 uses ceil(1 * 10000 / 3333) = 4 cents.
    result = waterfall(terms, reported_cents=1000, principal_cents=100, already_paid_cents=99)
    assert (result.tier1_cents, result.receipts_used_by_tier1_cents) == (1, 4)
    assert result.tier2_cents == (1000 - 4) * 2500 // 10000 == 249


def test_negative_report_pays_nothing_and_is_carried() -> None:
    adjusting = waterfall(TERMS, reported_cents=-30_000, principal_cents=100_000, already_paid_cents=0)
    assert (adjusting.pool_cents, adjusting.carry_out_cents, adjusting.receipts_cents) == (0, -30_000, 0)
    nxt = waterfall(
        TERMS, reported_cents=50_000, principal_cents=100_000, already_paid_cents=0, carried_in_cents=-30_000
    )
    assert (nxt.receipts_cents, nxt.pool_cents, nxt.carry_out_cents) == (20_000, 10_000, 0)
    small = waterfall(
        TERMS, reported_cents=10_000, principal_cents=100_000, already_paid_cents=0, carried_in_cents=-30_000
    )
    assert (small.pool_cents, small.carry_out_cents) == (0, -20_000)


def test_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        waterfall(TERMS, reported_cents=1, principal_cents=-1, already_paid_cents=0)
    with pytest.raises(ValueError):
        waterfall(TERMS, reported_cents=1, principal_cents=1, already_paid_cents=0, carried_in_cents=5)


terms_strategy = st.builds(
    Terms,
    recoup_share_bps=st.integers(1, 10_000),
    recoup_multiple_bps=st.integers(0, 100_000),
    profit_share_bps=st.integers(0, 10_000),
)


@given(
    terms=terms_strategy,
    receipts=st.integers(-(10**12), 10**12),
    principal=st.integers(0, 10**11),
    paid_fraction=st.integers(0, 20_000),
    carry=st.integers(-(10**11), 0),
)
def test_waterfall_properties(
    terms: Terms, receipts: int, principal: int, paid_fraction: int, carry: int
) -> None:
    target = principal * terms.recoup_multiple_bps // 10_000
    already = target * paid_fraction // 10_000
    result = waterfall(
        terms,
        reported_cents=receipts,
        principal_cents=principal,
        already_paid_cents=already,
        carried_in_cents=carry,
    )
    assert result.pool_cents >= 0 and result.tier1_cents >= 0 and result.tier2_cents >= 0
    # Never pays past the recoup target in tier 1.
    assert already + result.tier1_cents <= max(target, already)
    # Never pays more than the shares of the receipts allow.
    assert result.tier1_cents <= result.receipts_cents * terms.recoup_share_bps // 10_000
    assert 0 <= result.receipts_used_by_tier1_cents <= result.receipts_cents
    assert (
        result.tier2_cents
        <= (result.receipts_cents - result.receipts_used_by_tier1_cents) * terms.profit_share_bps // 10_000
    )
    # The pool never exceeds the receipts, and a negative net is carried whole.
    assert result.pool_cents <= result.receipts_cents
    assert result.receipts_cents + result.carry_out_cents == receipts + carry
    # When the target caps tier 1, it uses no more receipts than it needs: one
    # cent fewer would not cover it (otherwise it uses all of R, as docs/architecture.md says).
    if result.tier1_cents < result.receipts_cents * terms.recoup_share_bps // 10_000:
        used = result.receipts_used_by_tier1_cents
        assert Fraction(used * terms.recoup_share_bps, 10_000) >= result.tier1_cents
        assert Fraction((used - 1) * terms.recoup_share_bps, 10_000) < result.tier1_cents


def test_return_calculator_matches_a_run() -> None:
    from crowdfund.payouts.calculator import backer_return, curve

    # K = $300 over 6 stakes, R = $400 -> pool $200; 2 of 6 stakes -> $66.67 (the spare cent goes first).
    scenario = backer_return(TERMS, principal_cents=30_000, total_stakes=6, receipts_cents=40_000, stakes=2)
    assert (scenario.pool_cents, scenario.amount_cents) == (20_000, 6_667)
    points = curve(TERMS, principal_cents=30_000, total_stakes=6, stakes=1, top_cents=100_000)
    assert points[0].amount_cents == 0 and len(points) == 11
    assert all(a.amount_cents <= b.amount_cents for a, b in zip(points, points[1:], strict=False))

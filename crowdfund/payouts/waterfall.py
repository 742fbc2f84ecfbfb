"""The payout waterfall of docs/architecture.md. Pure: integers in, integers out.

The same function drives the payout run, the statement and the return
calculator on the film page, so the three can never disagree.

For an approved report of net receipts R (after any carried negative
amount), principal K (paid for stakes that stayed paid), target
T = K x recoup_multiple / 1e4 and P already paid to backers:

- tier1 = min(floor(R x recoup_share / 1e4), max(0, T - P))
- receipts used by tier1 = R if tier1 = floor(R x recoup_share / 1e4),
  else ceil(tier1 x 1e4 / recoup_share)
- tier2 = floor((R - used) x profit_share / 1e4); pool = tier1 + tier2

A negative R pays nothing and is carried, whole, to the next report.
"""

from __future__ import annotations

from dataclasses import dataclass

from crowdfund.money import BPS_DENOMINATOR


@dataclass(frozen=True)
class Terms:
    recoup_share_bps: int
    recoup_multiple_bps: int
    profit_share_bps: int


@dataclass(frozen=True)
class Waterfall:
    reported_cents: int  # the report's own net receipts (may be negative)
    carried_in_cents: int  # negative amount carried from earlier reports (<= 0)
    receipts_cents: int  # R: reported + carried in, floored at zero
    carry_out_cents: int  # what is carried on to the next report (<= 0)
    principal_cents: int  # K
    target_cents: int  # T
    already_paid_cents: int  # P
    tier1_cents: int
    receipts_used_by_tier1_cents: int
    tier2_cents: int

    @property
    def pool_cents(self) -> int:
        return self.tier1_cents + self.tier2_cents

    @property
    def recouped_after_cents(self) -> int:
        """What backers will have been paid in all after this report."""
        return self.already_paid_cents + self.pool_cents


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def waterfall(
    terms: Terms,
    *,
    reported_cents: int,
    principal_cents: int,
    already_paid_cents: int,
    carried_in_cents: int = 0,
) -> Waterfall:
    if principal_cents < 0 or already_paid_cents < 0 or carried_in_cents > 0:
        raise ValueError("principal and already paid are never negative; a carry is never positive")
    net = reported_cents + carried_in_cents
    receipts = max(0, net)
    carry_out = min(0, net)
    target = principal_cents * terms.recoup_multiple_bps // BPS_DENOMINATOR
    share_of_receipts = receipts * terms.recoup_share_bps // BPS_DENOMINATOR
    tier1 = min(share_of_receipts, max(0, target - already_paid_cents))
    if tier1 == share_of_receipts:
        used = receipts
    else:
        used = _ceil_div(tier1 * BPS_DENOMINATOR, terms.recoup_share_bps)
    tier2 = (receipts - used) * terms.profit_share_bps // BPS_DENOMINATOR
    return Waterfall(
        reported_cents=reported_cents,
        carried_in_cents=carried_in_cents,
        receipts_cents=receipts,
        carry_out_cents=carry_out,
        principal_cents=principal_cents,
        target_cents=target,
        already_paid_cents=already_paid_cents,
        tier1_cents=tier1,
        receipts_used_by_tier1_cents=used,
        tier2_cents=tier2,
    )

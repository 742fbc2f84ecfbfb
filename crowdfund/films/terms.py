"""The payout terms in plain words. Pure."""

from __future__ import annotations

from typing import Any

from crowdfund.money import apply_bps_floor, format_bps, format_cents, format_multiple


def describe_terms(
    recoup_share_bps: int,
    recoup_multiple_bps: int,
    profit_share_bps: int,
    funding_goal_cents: int,
) -> list[str]:
    target = apply_bps_floor(funding_goal_cents, recoup_multiple_bps)
    lines = []
    if recoup_multiple_bps > 0:
        lines.append(
            f"Until backers have been paid {format_multiple(recoup_multiple_bps)} what they put in "
            f"({format_cents(target)} if the film raises exactly its goal), backers share "
            f"{format_bps(recoup_share_bps)} of the film's net box-office receipts."
        )
        lines.append(
            f"After that, backers share {format_bps(profit_share_bps)} of net receipts."
            if profit_share_bps
            else "After that, backers receive nothing more."
        )
    else:
        lines.append(f"Backers share {format_bps(profit_share_bps)} of the film's net box-office receipts.")
    lines.append(
        "Each backer's part is in proportion to their paid stakes, split to the cent, "
        "and every payout statement shows how it was computed."
    )
    return lines


PLATFORM_RISKS = [
    "Films can lose money. You may get back less than you paid, or nothing at all.",
    "Payouts depend on the film's real box office, reported by the studio and approved by our "
    "finance team. Nothing is guaranteed and there is no fixed return.",
    "Stakes cannot be sold or transferred. You may cancel a paid order until 48 hours before "
    "the funding deadline.",
    "All or nothing: if the goal is not reached by the deadline, every backer is refunded in full.",
]


def film_terms(film: Any) -> list[str]:
    """A film's published terms as the catalogue, the studio and the reviewer show them."""
    return describe_terms(
        film.recoup_share_bps, film.recoup_multiple_bps, film.profit_share_bps, film.funding_goal_cents
    )

"""The studio's film page, which the studio and rewards views both render (with a form's errors)."""

from __future__ import annotations

from typing import Any

from flask import (
    render_template,
)
from wtforms.fields.choices import SelectChoice

from crowdfund.charts import line_chart
from crowdfund.films.terms import film_terms
from crowdfund.funding.queries import funding_stats
from crowdfund.money import format_cents
from crowdfund.reports.queries import raised_by_day
from crowdfund.rewards import screenings, tiers
from crowdfund.site.forms.accounts import EmptyForm
from crowdfund.site.forms.rewards import ScreeningForm, TierForm
from crowdfund.site.web import db


def render_studio_film(
    film: Any, status: int = 200, tier_form: Any = None, screening_form: Any = None
) -> Any:
    """The studio's film page; rewards forms come back here with their errors."""
    stats = funding_stats(db(), [film.id])[film.id]
    points = [(day.strftime("%d %b"), cents) for day, cents in raised_by_day(db(), film.id)]
    chart = line_chart(points, "Raised over time", format_cents)
    rewards = studio_rewards_context(film, tier_form, screening_form)
    return render_template(
        "studio/film.html",
        film=film,
        stats=stats,
        terms=film_terms(film),
        form=EmptyForm(),
        chart=chart,
        rewards=rewards,
    ), status


def screening_form(film: Any) -> ScreeningForm:
    form = ScreeningForm(prefix="screening")
    form.min_tier_id.choices = [SelectChoice("0", "Every ticket holder")] + [
        SelectChoice(str(t.id), f"Backers with {t.min_stakes}+ stakes")
        for t in tiers.film_tiers(db(), film.id)
    ]
    return form


def studio_rewards_context(
    film: Any, tier_form: TierForm | None = None, screening_form_: ScreeningForm | None = None
) -> dict[str, Any]:
    """What the studio's film page shows of rewards."""
    return {
        "tiers": tiers.film_tiers(db(), film.id),
        "attendance": screenings.attendance(db(), film.id),
        "tier_form": tier_form or TierForm(prefix="tier"),
        "screening_form": screening_form_ or screening_form(film),
        "can_schedule": film.state in screenings.SCREENING_STATES,
    }

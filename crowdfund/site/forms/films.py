from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import DateField, DateTimeLocalField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from crowdfund.films.models import Film
from crowdfund.films.rules import MIN_STAKE_PRICE_CENTS, RULE_READS, FilmInput, film_input_problems
from crowdfund.money import format_cents_plain, parse_amount
from crowdfund.site.forms.text import MultiLine, SingleLine

TIMEZONES = [
    "UTC",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "Africa/Lagos",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
]


def _money(form: FlaskForm, field: StringField) -> None:
    try:
        field.cents = parse_amount(field.data or "")
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def _percent_to_bps(text: str, scale: int) -> int:
    try:
        value = Decimal((text or "").strip().rstrip("%x").strip())
    except InvalidOperation as exc:
        raise ValidationError("Enter a number, like 50 or 12.5.") from exc
    if not value.is_finite() or value < 0 or value > 1000:
        raise ValidationError("Enter a number between 0 and 100.")
    bps = value * scale
    if bps != bps.to_integral_value():
        raise ValidationError("Use at most two decimals.")
    return int(bps)


def _percent(form: FlaskForm, field: StringField) -> None:
    field.bps = _percent_to_bps(field.data, 100)


def _multiple(form: FlaskForm, field: StringField) -> None:
    field.bps = _percent_to_bps(field.data, 10_000)


class FilmForm(FlaskForm):
    title = StringField(
        "Title",
        validators=[
            DataRequired("Enter a title."),
            SingleLine("The title"),
            Length(max=120, message="Use at most 120 characters."),
        ],
    )
    logline = StringField(
        "Logline",
        validators=[
            DataRequired("Enter a logline: one sentence about the film."),
            SingleLine("The logline"),
            Length(max=200, message="Use at most 200 characters."),
        ],
        description="One sentence that sells the film.",
    )
    synopsis = TextAreaField(
        "Synopsis",
        validators=[
            DataRequired("Enter a synopsis."),
            MultiLine("The synopsis"),
            Length(max=20_000, message="Use at most 20,000 characters."),
        ],
    )
    risks = TextAreaField(
        "Risks specific to this film",
        validators=[
            Optional(),
            MultiLine("The risks"),
            Length(max=20_000, message="Use at most 20,000 characters."),
        ],
        description="Shown to fans beside the platform's standard risks.",
    )
    poster = FileField("Poster (PNG or JPEG, at most 2 MB)")
    funding_goal = StringField("Funding goal ($)", validators=[DataRequired("Enter a funding goal."), _money])
    stake_price = StringField(
        "Price of one stake ($)", default="50.00", validators=[DataRequired("Enter the stake price."), _money]
    )
    stake_cap = IntegerField(
        "Most stakes on sale (cap)",
        validators=[InputRequired("Enter the cap."), NumberRange(1, 1_000_000, "Between 1 and 1,000,000.")],
    )
    per_backer_limit = IntegerField(
        "Most stakes one backer may hold",
        validators=[
            InputRequired("Enter the per-backer limit."),
            NumberRange(1, 1_000_000, "Between 1 and 1,000,000."),
        ],
    )
    deadline = DateTimeLocalField(
        "Funding deadline",
        format="%Y-%m-%dT%H:%M",
        validators=[InputRequired("Enter the deadline as a date and time.")],
    )
    timezone = SelectField("Time zone of the deadline", choices=TIMEZONES, default="UTC")
    expected_release_date = DateField(
        "Expected release date", validators=[InputRequired("Enter the expected release date.")]
    )
    recoup_share = StringField(
        "Backers' share of receipts until recouped (%)",
        default="50",
        validators=[DataRequired("Enter a percentage."), _percent],
    )
    recoup_multiple = StringField(
        "Recoup target (multiple of the money raised)",
        default="1.2",
        validators=[DataRequired("Enter a multiple, like 1 or 1.2."), _multiple],
    )
    profit_share = StringField(
        "Backers' share of receipts after that (%)",
        default="10",
        validators=[DataRequired("Enter a percentage."), _percent],
    )

    def validate(self, extra_validators: Any = None) -> bool:
        """The field checks and the film rules in one round: every wrong field
        gets its message at once, not the rules' only after the fields pass."""
        valid = super().validate(extra_validators)
        broken = {name for name, field in self._fields.items() if field.errors}
        problems = film_input_problems(self._input_with_placeholders(broken))
        for name, message in problems.items():
            # A rule that reads a broken field would judge a placeholder.
            if name in broken or RULE_READS.get(name, set()) & broken:
                continue
            self._fields[name].errors = list(self._fields[name].errors) + [message]
            valid = False
        return valid

    def _input_with_placeholders(self, broken: set[str]) -> FilmInput:
        """to_input(), with a harmless value for each field that failed its own check."""

        def pick(name: str, value: Any, placeholder: Any) -> Any:
            return placeholder if name in broken or value is None else value

        timezone = pick("timezone", self.timezone.data, "UTC")
        deadline = pick("deadline", self.deadline.data, datetime(2000, 1, 1))
        return FilmInput(
            title=pick("title", self.title.data, "x"),
            logline=pick("logline", self.logline.data, "x"),
            synopsis=pick("synopsis", self.synopsis.data, "x"),
            risks=pick("risks", self.risks.data, ""),
            funding_goal_cents=pick("funding_goal", getattr(self.funding_goal, "cents", None), 1),
            stake_price_cents=pick(
                "stake_price", getattr(self.stake_price, "cents", None), MIN_STAKE_PRICE_CENTS
            ),
            stake_cap=pick("stake_cap", self.stake_cap.data, 1),
            per_backer_limit=pick("per_backer_limit", self.per_backer_limit.data, 1),
            deadline=deadline.replace(tzinfo=ZoneInfo(timezone)).astimezone(UTC),
            timezone=timezone,
            expected_release_date=pick(
                "expected_release_date", self.expected_release_date.data, date(9999, 1, 1)
            ),
            recoup_share_bps=pick("recoup_share", getattr(self.recoup_share, "bps", None), 1),
            recoup_multiple_bps=pick("recoup_multiple", getattr(self.recoup_multiple, "bps", None), 0),
            profit_share_bps=pick("profit_share", getattr(self.profit_share, "bps", None), 0),
        )

    def to_input(self) -> FilmInput:
        zone = ZoneInfo(self.timezone.data)
        deadline = self.deadline.data.replace(tzinfo=zone).astimezone(UTC)
        return FilmInput(
            title=self.title.data or "",
            logline=self.logline.data or "",
            synopsis=self.synopsis.data or "",
            risks=self.risks.data or "",
            funding_goal_cents=self.funding_goal.cents,
            stake_price_cents=self.stake_price.cents,
            stake_cap=self.stake_cap.data,
            per_backer_limit=self.per_backer_limit.data,
            deadline=deadline,
            timezone=self.timezone.data,
            expected_release_date=self.expected_release_date.data,
            recoup_share_bps=self.recoup_share.bps,
            recoup_multiple_bps=self.recoup_multiple.bps,
            profit_share_bps=self.profit_share.bps,
        )

    def fill_from(self, film: Film) -> None:
        zone = ZoneInfo(film.timezone)
        self.title.data = film.title
        self.logline.data = film.logline
        self.synopsis.data = film.synopsis
        self.risks.data = film.risks
        self.funding_goal.data = format_cents_plain(film.funding_goal_cents)
        self.stake_price.data = format_cents_plain(film.stake_price_cents)
        self.stake_cap.data = film.stake_cap
        self.per_backer_limit.data = film.per_backer_limit
        self.deadline.data = film.deadline.astimezone(zone).replace(tzinfo=None)
        self.timezone.data = film.timezone
        self.expected_release_date.data = film.expected_release_date
        self.recoup_share.data = _bps_to_text(film.recoup_share_bps, 100)
        self.recoup_multiple.data = _bps_to_text(film.recoup_multiple_bps, 10_000)
        self.profit_share.data = _bps_to_text(film.profit_share_bps, 100)


def _bps_to_text(bps: int, scale: int) -> str:
    text = format(Decimal(bps) / scale, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class SendBackForm(FlaskForm):
    reason = TextAreaField(
        "Reason the studio will see",
        validators=[
            DataRequired("Say why the film goes back to the studio."),
            MultiLine("The reason"),
            Length(max=5000),
        ],
    )

from __future__ import annotations

from datetime import UTC
from zoneinfo import ZoneInfo

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from crowdfund.params import coerce_id
from crowdfund.rewards.rules import MAX_EXTRAS, MAX_TICKETS_PER_TIER
from crowdfund.rewards.screenings import MAX_SEATS, ScreeningInput
from crowdfund.site.forms.text import SingleLine


class TierForm(FlaskForm):
    min_stakes = IntegerField(
        "Stakes or more",
        validators=[
            InputRequired("Enter how many stakes reach this tier."),
            NumberRange(1, 1_000_000, "At least 1 stake."),
        ],
    )
    tickets = IntegerField(
        "Screening tickets",
        default=1,
        validators=[
            InputRequired("Enter how many tickets this tier gives."),
            NumberRange(0, MAX_TICKETS_PER_TIER, f"Between 0 and {MAX_TICKETS_PER_TIER}."),
        ],
    )
    extras = StringField(
        "Extras (optional)",
        validators=[Optional(), SingleLine("The extras"), Length(max=MAX_EXTRAS)],
        description="For example: premiere invitation, signed poster, name in the credits.",
    )


class ScreeningForm(FlaskForm):
    cinema = StringField(
        "Cinema", validators=[DataRequired("Enter the cinema."), SingleLine("The cinema"), Length(max=120)]
    )
    city = StringField(
        "City", validators=[DataRequired("Enter the city."), SingleLine("The city"), Length(max=80)]
    )
    starts_at = DateTimeLocalField(
        "Starts at",
        format="%Y-%m-%dT%H:%M",
        validators=[InputRequired("Enter the start as a date and time.")],
    )
    seats = IntegerField(
        "Seats",
        validators=[
            InputRequired("Enter the number of seats."),
            NumberRange(1, MAX_SEATS, f"Between 1 and {MAX_SEATS:,}."),
        ],
    )
    min_tier_id = SelectField("Who may book", coerce=int, choices=[SelectChoice("0", "Every ticket holder")])

    def to_input(self, zone: str) -> ScreeningInput:
        starts_at = self.starts_at.data.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
        return ScreeningInput(
            cinema=self.cinema.data or "",
            city=self.city.data or "",
            starts_at=starts_at,
            seats=self.seats.data,
            min_tier_id=self.min_tier_id.data or None,
        )


class BookForm(FlaskForm):
    screening_id = SelectField("Screening", coerce=coerce_id, choices=[], validate_choice=False)


class CheckInForm(FlaskForm):
    code = StringField(
        "Ticket code",
        validators=[DataRequired("Enter or scan a ticket code."), Length(max=64)],
        description="Type the code printed under the QR code, or scan it.",
    )

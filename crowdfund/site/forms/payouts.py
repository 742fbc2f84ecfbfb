from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from crowdfund.money import parse_signed_amount
from crowdfund.params import MAX_ID, parse_int
from crowdfund.site.forms.fields import IsoDateField
from crowdfund.site.forms.text import SingleLine


def _signed_money(form: FlaskForm, field: StringField) -> None:
    try:
        field.cents = parse_signed_amount(field.data or "")
    except ValueError as exc:
        raise ValidationError(str(exc) + " A correction may be negative, like -1,250.00.") from exc


def _report_number(form: FlaskForm, field: StringField) -> None:
    try:
        field.report_id = parse_int((field.data or "").strip().lstrip("#"), minimum=1, maximum=MAX_ID)
    except ValueError as exc:
        raise ValidationError("Enter the number of the report this one corrects, like 12.") from exc


class ReportForm(FlaskForm):
    period_start = IsoDateField(
        "Period start", validators=[InputRequired("Enter the first day of the period.")]
    )
    period_end = IsoDateField("Period end", validators=[InputRequired("Enter the last day of the period.")])
    net_receipts = StringField(
        "Net box-office receipts ($)",
        validators=[DataRequired("Enter the net receipts."), Length(max=20), _signed_money],
        description="Negative for a correction of earlier reports.",
    )
    corrects_report = StringField(
        "Corrects report # (only for a correction)",
        validators=[Optional(), Length(max=20), _report_number],
        description="A correction names the approved report it corrects and lies inside its period; "
        "any other report's period may not overlap another report's.",
    )
    note = TextAreaField("Note", validators=[Optional(), Length(max=5000)])
    file = FileField("Supporting file (PDF or CSV, at most 5 MB)")


class RejectForm(FlaskForm):
    reason = TextAreaField(
        "Reason the studio will see",
        validators=[DataRequired("Say why the report is rejected."), Length(max=5000)],
    )


class PaidForm(FlaskForm):
    bank_reference = StringField(
        "Bank transfer reference",
        validators=[
            DataRequired("Enter the bank transfer's reference."),
            SingleLine("The bank transfer reference"),
            Length(max=120),
        ],
    )


class LedgerExportForm(FlaskForm):
    class Meta:
        csrf = False  # a GET form: it reads, never writes

    start = IsoDateField("From", validators=[InputRequired("Enter a start date.")])
    end = IsoDateField("To", validators=[InputRequired("Enter an end date.")])

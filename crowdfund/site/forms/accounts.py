from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length

from crowdfund.site.forms.text import SingleLine


class SignUpForm(FlaskForm):
    display_name = StringField(
        "Your name", validators=[DataRequired("Enter your name."), SingleLine("Your name"), Length(max=80)]
    )
    email = EmailField("E-mail", validators=[DataRequired("Enter your e-mail address."), Length(max=254)])
    password = PasswordField(
        "Password",
        validators=[DataRequired("Choose a password."), Length(max=256)],
        description="At least 10 characters.",
    )
    confirm = PasswordField(
        "Repeat password",
        validators=[DataRequired("Repeat the password."), EqualTo("password", "The passwords differ.")],
    )


class LogInForm(FlaskForm):
    email = EmailField(
        "E-mail",
        validators=[DataRequired("Enter your e-mail address."), Length(max=254)],
        render_kw={"autocomplete": "username"},
    )
    password = PasswordField(
        "Password",
        validators=[DataRequired("Enter your password."), Length(max=256)],
        render_kw={"autocomplete": "current-password"},
    )
    remember = BooleanField("Keep me logged in")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=["fan", "finance", "admin"])


class StudioMembershipForm(FlaskForm):
    studio_id = SelectField("Studio", coerce=int, choices=[])


class StudioForm(FlaskForm):
    name = StringField(
        "Studio name",
        validators=[DataRequired("Enter the studio's name."), SingleLine("The studio name"), Length(max=120)],
    )


class TimeZoneForm(FlaskForm):
    time_zone = StringField(
        "Time zone",
        validators=[Length(max=64, message="A time zone name is at most 64 characters.")],
        description="An IANA name such as Europe/Paris or Asia/Tokyo; empty for UTC. "
        "The times in our e-mails are shown in it.",
        render_kw={"list": "time-zones", "autocomplete": "off"},
    )


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for buttons that POST."""


class ForgotPasswordForm(FlaskForm):
    email = EmailField(
        "E-mail",
        validators=[DataRequired("Enter your e-mail address."), Length(max=254)],
        render_kw={"autocomplete": "email"},
    )


class ResetPasswordForm(FlaskForm):
    password = PasswordField(
        "New password",
        validators=[DataRequired("Choose a password."), Length(max=256)],
        description="At least 10 characters.",
        render_kw={"autocomplete": "new-password"},
    )
    confirm = PasswordField(
        "Repeat new password",
        validators=[DataRequired("Repeat the password."), EqualTo("password", "The passwords differ.")],
        render_kw={"autocomplete": "new-password"},
    )


class PayoutAccountForm(FlaskForm):
    kind = SelectField(
        "Bank account",
        choices=[
            SelectChoice("sepa", "SEPA: an IBAN (Europe)"),
            SelectChoice("us", "United States: routing and account number"),
        ],
    )
    holder_name = StringField("Account holder's name", validators=[Length(max=140)])
    iban = StringField("IBAN", validators=[Length(max=50)], render_kw={"autocomplete": "off"})
    bic = StringField(
        "BIC (SWIFT code)", validators=[Length(max=11)], description="Found from the IBAN if empty."
    )
    routing_number = StringField(
        "Routing number (ABA)", validators=[Length(max=12)], render_kw={"autocomplete": "off"}
    )
    account_number = StringField(
        "Account number", validators=[Length(max=20)], render_kw={"autocomplete": "off"}
    )
    password = PasswordField("Your password, to confirm", render_kw={"autocomplete": "current-password"})

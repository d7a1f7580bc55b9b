from flask_babel import gettext as _, lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, IntegerField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional, Regexp, Email, ValidationError

from ..mpesa.phone import InvalidPhoneNumber, NotMpesaLine, check_mpesa_line, display_phone, normalize_phone
from . import passwords
from ..i18n import translate_stored
from ..notices.service import CATEGORIES as EMAIL_CATEGORIES

USERNAME_RULE = Regexp(r"^[A-Za-z0-9_.-]+$", message=_l("Use letters, digits, dots, dashes or underscores only."))


class PhoneField(StringField):
    """A Kenyan mobile number, normalised to 2547XXXXXXXX / 2541XXXXXXXX on validation."""

    # Set when the number was refused for its network: the form then offers MOVED_FIELD.
    other_network = None

    def pre_validate(self, form):
        if not self.data:
            return
        try:
            self.data = normalize_phone(self.data)
            moved = getattr(form, MOVED_FIELD, None)
            check_mpesa_line(self.data, moved=bool(moved is not None and moved.data))
        except NotMpesaLine as exc:
            self.other_network = exc.network
            raise ValidationError(not_mpesa_message(self.data, exc.network)) from exc
        except InvalidPhoneNumber as exc:
            raise ValidationError(translate_stored(str(exc))) from exc

    def _value(self):
        # What the customer typed is shown back as typed; a stored number as they write it.
        if self.raw_data:
            return self.raw_data[0]
        return display_phone(self.data) if self.data else ""


def not_mpesa_message(phone: str, network: str) -> str:
    """NotMpesaLine's words, in the customer's language ("an Airtel", "a Telkom" in English)."""
    if network[:1] in "AEIOU":
        return _("%(phone)s is an %(network)s number; M-Pesa needs a Safaricom line.",
                 phone=display_phone(phone), network=network)
    return _("%(phone)s is a %(network)s number; M-Pesa needs a Safaricom line.",
             phone=display_phone(phone), network=network)


# Numbers move between networks and keep their digits: a customer whose number the
# numbering plan gives to Airtel or Telkom can say it is now on Safaricom.
MOVED_FIELD = "moved_to_safaricom"


def moved_field():
    return BooleanField(_l("This number has moved to Safaricom and has M-Pesa"))


def phone_field(label=_l("M-Pesa phone number")):
    return PhoneField(label, validators=[DataRequired(message=_l("Enter your M-Pesa phone number.")),
                                         Length(max=32, message=_l("That is too long for a phone number."))],
                      render_kw={"inputmode": "tel", "autocomplete": "tel", "placeholder": "0712 345 678"})


class RegisterForm(FlaskForm):
    username = StringField(_l("Username"), validators=[
        DataRequired(message=_l("Choose a username.")),
        Length(min=3, max=32, message=_l("A username has 3 to 32 characters.")), USERNAME_RULE],
        render_kw={"autocomplete": "username", "autocapitalize": "none"})
    password = PasswordField(_l("Password"), validators=[DataRequired(message=_l("Choose a password."))],
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(_l("Repeat password"), validators=[
        DataRequired(message=_l("Repeat the password.")),
        EqualTo("password", message=_l("The passwords do not match."))],
        render_kw={"autocomplete": "new-password"})
    phone_number = phone_field()
    moved_to_safaricom = moved_field()
    next = HiddenField()

    def validate_password(self, field):
        check_new_password(field, self.username.data)


def check_new_password(field, username):
    """The shared password rules (length in bytes, common passwords, the username), as a form error."""
    message = passwords.problem(field.data or "", username)
    if message:
        raise ValidationError(message)


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(message=_l("Enter your username.")),
                                                       Length(max=32, message=_l("Incorrect username or password."))],
                           render_kw={"autocomplete": "username", "autocapitalize": "none"})
    password = PasswordField(_l("Password"), validators=[DataRequired(message=_l("Enter your password.")),
                                                         Length(max=128, message=_l("Incorrect username or password."))],
                             render_kw={"autocomplete": "current-password"})
    remember = BooleanField(_l("Keep me logged in"))
    next = HiddenField()


class ProfileForm(FlaskForm):
    phone_number = phone_field()
    moved_to_safaricom = moved_field()
    email = EmailField(_l("E-mail for receipts (optional)"), validators=[
        Optional(), Length(max=254), Email(message=_l("Enter a valid e-mail address, or leave it empty."))],
        render_kw={"autocomplete": "email"})
    low_words_threshold = IntegerField(_l("Warn me when my balance falls below (words)"), validators=[
        Optional(), NumberRange(min=0, max=10_000_000, message=_l("Enter a number of words from 0 up."))],
        render_kw={"inputmode": "numeric"})
    # Which notices also come by e-mail; stored as users.email_opt_out (the unticked ones).
    email_receipt = BooleanField(EMAIL_CATEGORIES["receipt"], default=True)
    email_problem = BooleanField(EMAIL_CATEGORIES["problem"], default=True)
    email_adjustment = BooleanField(EMAIL_CATEGORIES["adjustment"], default=True)
    email_low_balance = BooleanField(EMAIL_CATEGORIES["low_balance"], default=True)


class PasswordChangeForm(FlaskForm):
    current_password = PasswordField(_l("Current password"), validators=[
        DataRequired(message=_l("Enter your current password."))], render_kw={"autocomplete": "current-password"})
    new_password = PasswordField(_l("New password"), validators=[DataRequired(message=_l("Choose a new password."))],
                                 render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(_l("Repeat the new password"), validators=[
        DataRequired(message=_l("Repeat the new password.")),
        EqualTo("new_password", message=_l("The passwords do not match."))], render_kw={"autocomplete": "new-password"})

    def __init__(self, *args, username: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self._username = username

    def validate_new_password(self, field):
        check_new_password(field, self._username)


class SessionsForm(FlaskForm):
    """Just the CSRF token: "log out everywhere" is a POST."""


class ApiKeyForm(FlaskForm):
    """Rotating the key is a POST; replacing a key that exists needs the box ticked."""
    confirm = BooleanField(_l("Yes, replace my key: the current one stops working at once"))

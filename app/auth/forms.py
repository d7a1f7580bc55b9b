from flask_babel import gettext, lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, IntegerField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional, Email, ValidationError

from ..fields import USERNAME_RULE, moved_field, phone_field
from . import passwords
from .retype import RetypedPasswords
from ..notices.service import CATEGORIES as EMAIL_CATEGORIES


def email_field(label):
    return EmailField(label, validators=[
        Optional(), Length(max=254, message=_l("That is too long for an e-mail address.")),
        Email(message=_l("Enter a valid e-mail address, or leave it empty."))],
        filters=[lambda value: value.strip() if isinstance(value, str) else value],
        render_kw={"autocomplete": "email", "autocapitalize": "none", "spellcheck": "false"})


class RegisterForm(RetypedPasswords, FlaskForm):
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
    email = email_field(_l("E-mail (optional)"))
    next = HiddenField()

    def validate_password(self, field):
        check_new_password(field, self.username.data)


def check_new_password(field, username):
    """The shared password rules (length in bytes, common passwords, the username), as a form error."""
    message = passwords.problem(field.data or "", username, translate=gettext)
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
    email = email_field(_l("E-mail for receipts and password resets (optional)"))
    # Whoever sets the e-mail address can reset the password: a changed address needs it.
    email_password = PasswordField(_l("Your current password (only to change the e-mail address)"),
                                   validators=[Optional()], render_kw={"autocomplete": "current-password"})
    low_words_threshold = IntegerField(_l("Warn me when my balance falls below (words)"), validators=[
        Optional(), NumberRange(min=0, max=10_000_000, message=_l("Enter a number of words from 0 up."))],
        render_kw={"inputmode": "numeric"})
    # Which notices also come by e-mail; stored as users.email_opt_out (the unticked ones).
    email_receipt = BooleanField(EMAIL_CATEGORIES["receipt"], default=True)
    email_problem = BooleanField(EMAIL_CATEGORIES["problem"], default=True)
    email_adjustment = BooleanField(EMAIL_CATEGORIES["adjustment"], default=True)
    email_low_balance = BooleanField(EMAIL_CATEGORIES["low_balance"], default=True)


class ResetPasswordForm(RetypedPasswords, FlaskForm):
    """A new password, typed twice: set from a reset link, or (below) changed on the profile."""
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


class PasswordChangeForm(ResetPasswordForm):
    current_password = PasswordField(_l("Current password"), validators=[
        DataRequired(message=_l("Enter your current password."))], render_kw={"autocomplete": "current-password"})


class SessionsForm(FlaskForm):
    """Just the CSRF token: "log out everywhere" is a POST."""


class ApiKeyForm(FlaskForm):
    """Rotating the key is a POST; replacing a key that exists needs the box ticked."""
    confirm = BooleanField(_l("Yes, replace my key: the current one stops working at once"))


class ForgotPasswordForm(FlaskForm):
    account = StringField(_l("Your username or e-mail address"), validators=[
        DataRequired(message=_l("Enter your username or your e-mail address.")),
        Length(max=254, message=_l("That is too long for a username or an e-mail address."))],
        render_kw={"autocomplete": "username", "autocapitalize": "none", "spellcheck": "false"})

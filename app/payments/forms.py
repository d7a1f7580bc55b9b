from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms.validators import AnyOf, DataRequired, Length, Regexp

from ..fields import moved_field, phone_field


class CheckoutForm(FlaskForm):
    phone_number = phone_field(_l("Pay with this M-Pesa number"))
    moved_to_safaricom = moved_field()
    # One key per rendered form: a double click or a resubmit finds the same payment.
    idempotency_key = HiddenField(validators=[DataRequired(), Length(min=8, max=64),
                                              Regexp(r"^[A-Za-z0-9_-]+$")])


class PaymentActionForm(FlaskForm):
    """CSRF only: "check again" is a POST."""


class CancelForm(FlaskForm):
    """Cancel a waiting payment; `then` says where the customer goes next."""
    then = HiddenField(default="stay", validators=[DataRequired(), AnyOf(["stay", "another"])])

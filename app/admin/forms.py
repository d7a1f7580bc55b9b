"""Forms of the operator console. Every repair is a POST with a CSRF token and a reason."""
import uuid

from flask_wtf import FlaskForm
from wtforms import Form, HiddenField, IntegerField, RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from ..payments import states

STATUS_CHOICES = [SelectChoice("", "Any status"), SelectChoice("needs_review", "Needs review")] + [
    SelectChoice(status, status) for status in sorted(states.RANK, key=lambda s: (states.RANK[s], s))]


def reason_field():
    return TextAreaField("Reason", validators=[
        DataRequired(message="Give a reason: it is kept in the audit log."),
        Length(min=3, max=500, message="A reason has 3 to 500 characters.")],
        render_kw={"rows": 2, "maxlength": 500})


class AskDarajaForm(FlaskForm):
    reason = reason_field()


class RequeueJobForm(FlaskForm):
    reason = reason_field()


class ReviewForm(FlaskForm):
    decision = RadioField("Decision", choices=[SelectChoice("approve", "Approve: credit the words"),
                                               SelectChoice("reject", "Reject: credit nothing")],
                          validators=[InputRequired(message="Choose approve or reject.")])
    reason = reason_field()


class AdjustForm(FlaskForm):
    direction = RadioField("Direction", choices=[SelectChoice("credit", "Credit (add words)"),
                                                    SelectChoice("debit", "Debit (take words)")],
                           default="credit", validators=[InputRequired(message="Choose credit or debit.")])
    words = IntegerField("Words", validators=[
        InputRequired(message="Enter a number of words."),
        NumberRange(min=1, max=10_000_000, message="Enter a number of words from 1 to 10,000,000.")],
        render_kw={"inputmode": "numeric"})
    reason = reason_field()
    request_key = HiddenField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.request_key.data:
            self.request_key.data = uuid.uuid4().hex


class RefundForm(FlaskForm):
    words = IntegerField("Words to take back", validators=[
        InputRequired(message="Enter the words to take back."),
        NumberRange(min=1, message="Take back at least 1 word.")], render_kw={"inputmode": "numeric"})
    amount_kes = IntegerField("KES refunded", validators=[
        InputRequired(message="Enter the KES sent back (0 if none)."),
        NumberRange(min=0, message="The KES refunded cannot be negative.")], render_kw={"inputmode": "numeric"})
    reason = reason_field()
    # Empty on the first post (the console then shows what will happen); "yes" from the confirm button.
    confirmed = HiddenField()


class ReverseForm(FlaskForm):
    words_mode = SelectField("Words already spent", choices=[
        SelectChoice("unspent", "Send back only the share of words still unspent"),
        SelectChoice("whole", "Send back everything paid")], validators=[InputRequired()])
    reason = reason_field()


class AssignMenuPaymentForm(FlaskForm):
    trans_id = HiddenField(validators=[DataRequired(), Length(max=20)])
    payment_id = StringField("Order (payment id)", validators=[
        DataRequired(message="Paste the id of the customer's open or failed order."), Length(min=24, max=24)])
    reason = reason_field()


class ReversalOutcomeForm(FlaskForm):
    outcome = SelectField("What the M-Pesa statement shows", choices=[
        SelectChoice("sent", "The money went back to the customer"),
        SelectChoice("not_sent", "The money did not go back")], validators=[InputRequired()])
    reason = reason_field()


class ReverseMenuPaymentForm(FlaskForm):
    trans_id = HiddenField(validators=[DataRequired(), Length(max=20)])
    reason = reason_field()


class PaymentFilterForm(Form):
    """The payment search: a GET form, so it needs no CSRF token and can be bookmarked."""
    status = SelectField("Status", choices=STATUS_CHOICES, validators=[Optional()])
    phone = StringField("Phone", validators=[Optional(), Length(max=32)])
    receipt = StringField("M-Pesa receipt", validators=[Optional(), Length(max=32)])
    checkout_request_id = StringField("CheckoutRequestID", validators=[Optional(), Length(max=128)])
    username = StringField("Username", validators=[Optional(), Length(max=64)])
    date_from = StringField("From", validators=[Optional(), Length(max=10)], render_kw={"type": "date"})
    date_to = StringField("To", validators=[Optional(), Length(max=10)], render_kw={"type": "date"})


class ResetLinkForm(FlaskForm):
    """A one-time password reset link for a customer who cannot use "forgot password"."""
    reason = reason_field()

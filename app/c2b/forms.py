from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField
from wtforms.validators import DataRequired, Length


class ReceiptClaimForm(FlaskForm):
    receipt = StringField(_l("M-Pesa receipt code (from the SMS)"),
                          validators=[DataRequired(_l("Type the receipt code from your M-Pesa SMS.")), Length(max=20)])
    submit = SubmitField(_l("I have paid: check my receipt"))

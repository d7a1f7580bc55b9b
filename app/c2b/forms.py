from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField
from wtforms.validators import DataRequired, Length


class ReceiptClaimForm(FlaskForm):
    receipt = StringField("M-Pesa receipt code (from the SMS)",
                          validators=[DataRequired("Type the receipt code from your M-Pesa SMS."), Length(max=20)])
    submit = SubmitField("I have paid: check my receipt")

from flask_wtf import FlaskForm
from wtforms import HiddenField, TextAreaField
from wtforms.validators import DataRequired, Length

from .service import MAX_TEXT_CHARS


class SpendForm(FlaskForm):
    text = TextAreaField("Paste your text", validators=[
        DataRequired(message="Paste some text to count and charge."),
        Length(max=MAX_TEXT_CHARS, message=f"That is more than {MAX_TEXT_CHARS:,} characters; split it up.")])
    idempotency_key = HiddenField(validators=[DataRequired(), Length(min=8, max=64)])

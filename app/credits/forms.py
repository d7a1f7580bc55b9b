from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, TextAreaField
from wtforms.validators import DataRequired, Length

from .service import MAX_TEXT_CHARS


class SpendForm(FlaskForm):
    text = TextAreaField(_l("Paste your text"), validators=[
        DataRequired(message=_l("Paste some text to count and charge.")),
        Length(max=MAX_TEXT_CHARS, message=_l("That is more than %(num)s characters; split it up.",
                                              num=f"{MAX_TEXT_CHARS:,}"))])
    idempotency_key = HiddenField(validators=[DataRequired(), Length(min=8, max=64)])

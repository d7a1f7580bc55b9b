"""Password boxes after a failed submit: empty, and the messages say so.

A password is never sent back to the browser, so after any form error both boxes come
back empty. "The passwords do not match" beside two empty boxes is then false; the
customer is told what happened and what to type instead. (A box emptied for another
field's error says so under it: see the field macro in _form.html.)
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import PasswordField
from wtforms.validators import EqualTo

MISMATCH_RETYPED = _l("The two passwords you typed were different. Type the password again in both boxes.")


class RetypedPasswords:
    """Mixin for a FlaskForm with password boxes (put it before FlaskForm)."""

    def validate(self, extra_validators=None):
        valid = super().validate(extra_validators)
        if not valid:
            settle_password_errors(self)
        return valid


def settle_password_errors(form) -> None:
    for box in (field for field in form if isinstance(field, PasswordField)):
        for validator in box.validators:
            if isinstance(validator, EqualTo) and validator.message in box.errors:
                # The mismatch is the first box's problem to fix; the repeat box (empty, like
                # the first) is not marked wrong.
                box.errors = [e for e in box.errors if e != validator.message]
                first = form[validator.fieldname]
                first.errors = [*first.errors, str(MISMATCH_RETYPED)]

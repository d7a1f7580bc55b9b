"""Form fields more than one blueprint asks for: a username's rule and an M-Pesa phone number."""
from flask_babel import gettext as _, lazy_gettext as _l
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired, Length, Regexp, ValidationError

from .i18n import translate_stored
from .mpesa.phone import InvalidPhoneNumber, NotMpesaLine, check_mpesa_line, display_phone, normalize_phone

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

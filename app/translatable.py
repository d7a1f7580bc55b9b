"""English text marked for the catalog, and gettext for one customer's language outside a request."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def N_(text: str) -> str:
    """Puts `text` in the translation catalog (the extractor looks for N_) and returns it unchanged.

    Messages such as a payment's `customer_message` are written by the worker, which has no
    customer and so no language; the page, notice or e-mail that shows one translates it
    then (see app.i18n.translate_stored).
    """
    return text


# ---------------------------------------------------------------- text for one customer, outside a request

TRANSLATIONS_DIR = Path(__file__).with_name("translations")
# Code, and the language's name in itself (what the switch shows: a customer looks for their own).
LANGUAGES = {"en": "English", "sw": "Kiswahili"}


@dataclass(frozen=True)
class Translator:
    """gettext for one language, for text written away from any request (notices, e-mails).

    Pages take the language from the request (app.i18n); a notice or an e-mail is written
    by whichever process settled the payment, so it takes the customer's stored choice.
    """
    language: str
    catalog: Any

    def __call__(self, text: str, /, **values) -> str:
        out = self.catalog.gettext(text)
        return out % values if values else out

    def plural(self, singular: str, plural: str, n: int, /, **values) -> str:
        return self.catalog.ngettext(singular, plural, n) % {"num": f"{n:,}", **values}

    def words(self, n: int) -> str:
        """"1 word", "10,000 words" (Swahili: "neno 1", "maneno 10,000")."""
        return self.plural("%(num)s word", "%(num)s words", abs(n))


@functools.lru_cache(maxsize=8)
def translator(language: str | None) -> Translator:
    """The customer's language when we have its catalog, else English (the text as written)."""
    from babel.support import NullTranslations, Translations
    code = language if language in LANGUAGES else "en"
    catalog = (Translations.load(str(TRANSLATIONS_DIR), [code], domain="messages")
               if code != "en" else NullTranslations())
    return Translator(code, catalog)


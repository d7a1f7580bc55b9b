"""A mark for English text that is stored now and translated where a customer reads it."""


def N_(text: str) -> str:
    """Puts `text` in the translation catalog (the extractor looks for N_) and returns it unchanged.

    Messages such as a payment's `customer_message` are written by the worker, which has no
    customer and so no language; the page, notice or e-mail that shows one translates it
    then (see app.i18n.translate_stored).
    """
    return text

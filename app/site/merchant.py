"""Who sells the words, from the MERCHANT_* settings and the M-Pesa number customers pay."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Merchant:
    trading_name: str
    legal_name: str
    contact_phone: str
    contact_email: str
    kra_pin: str
    pay_label: str   # "Paybill" or "Till number", as M-Pesa's own menu says
    pay_number: str
    refund_days: int

    @property
    def phone_link(self) -> str:
        """The contact phone as a tel: link (digits and a leading + only)."""
        digits = "".join(c for c in self.contact_phone if c.isdigit() or c == "+")
        return f"tel:{digits}" if digits else ""

    @property
    def has_contact(self) -> bool:
        return bool(self.contact_phone or self.contact_email)


def merchant_from(config: Mapping[str, Any]) -> Merchant:
    # The number on receipts is the one the prompt pays, not a second setting that could
    # disagree with it: a till for Buy Goods (PartyB when set), else the paybill shortcode.
    if config.get("MPESA_TRANSACTION_TYPE") == "CustomerBuyGoodsOnline":
        pay_label, pay_number = "Till number", config.get("MPESA_PARTY_B") or config.get("MPESA_SHORTCODE") or ""
    else:
        pay_label, pay_number = "Paybill", config.get("MPESA_SHORTCODE") or ""
    trading = config.get("MERCHANT_TRADING_NAME") or "Lipia"
    return Merchant(trading_name=trading,
                    legal_name=config.get("MERCHANT_LEGAL_NAME") or "",
                    contact_phone=config.get("MERCHANT_CONTACT_PHONE") or "",
                    contact_email=config.get("MERCHANT_CONTACT_EMAIL") or "",
                    kra_pin=config.get("MERCHANT_KRA_PIN") or "",
                    pay_label=pay_label, pay_number=pay_number,
                    refund_days=int(config.get("REFUND_WINDOW_DAYS") or 14))

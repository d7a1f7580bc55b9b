"""The operator's reversals: send a paid payment or an unmatched menu payment back through
M-Pesa, and record from the statement how one ended that M-Pesa never answered. The rules of
app.admin.repairs hold here too (checks first, a reason always, the audit log after)."""
from __future__ import annotations

from .. import audit
from ..payments import claims, refunds
from .repairs import RepairError, RepairResult, _payment, _reason


def reverse_payment(db, config, payment_id, *, actor: str, reason: str, words_mode: str) -> RepairResult:
    """Claim the payment, hold its words and queue the Reversal: the worker sends it, and the
    words are booked when M-Pesa's result confirms it (released if M-Pesa refuses)."""
    reason = _reason(reason)
    payment = _payment(db, payment_id)
    if not claims.enabled(config):
        raise RepairError("No initiator settings (MPESA_INITIATOR_NAME, MPESA_INITIATOR_PASSWORD, "
                          "MPESA_CERTIFICATE_PATH): M-Pesa cannot send money back from here. "
                          "Record a ledger-only refund and send the money back by hand.")
    try:
        reversal = refunds.request(db, config, payment, actor=actor, reason=reason, words_mode=words_mode)
    except refunds.RefundRefused as exc:
        raise RepairError(str(exc)) from None
    audit.record(db, actor=actor, action="reversal", target_type="payment", target_id=payment["_id"],
                 reason=reason, before={"status": payment["status"]},
                 after={"reversal": reversal["_id"], "amount_kes": reversal["amount"], "words_mode": words_mode,
                        "words_held": reversal["words_held"], "written_off_words": reversal["written_off_words"]},
                 result=reversal["state"])
    held = f"{reversal['words_held']:,} words are held" if reversal["words_held"] else "No words are left to hold"
    off = (f"; {reversal['written_off_words']:,} words already spent are written off in your name"
           if reversal["written_off_words"] else "")
    return RepairResult(f"Reversal of KES {reversal['amount']:,} queued: the worker sends it to M-Pesa within "
                        f"seconds. {held} until M-Pesa answers{off}. This page shows the result.", "info")


def settle_reversal(db, refunded, *, sent: bool, actor: str, reason: str) -> RepairResult:
    """Record how a reversal M-Pesa never answered ended, as the M-Pesa statement shows it.
    `refunded` is the payment's id, or `c2b:<TransID>` for a menu payment sent back."""
    reason = _reason(reason)
    label = str(refunded or "").strip()
    reversal = refunds.latest(db, label if label.startswith("c2b:") else _payment(db, label)["_id"])
    if reversal is None or not refunds.settle_by_hand(db, reversal, sent=sent, actor=actor, reason=reason):
        raise RepairError("Only a reversal whose outcome M-Pesa did not tell us can be settled by hand; "
                          "this one has moved on (reload the page).")
    audit.record(db, actor=actor, action="settle_reversal", target_type="payment", target_id=reversal["payment_id"],
                 reason=reason, before={"reversal": reversal["_id"], "state": reversal["state"]},
                 result="completed" if sent else "failed")
    held = int(reversal.get("words_held") or 0)
    return RepairResult(f"Recorded: the money went back; the {held:,} held words stay taken." if sent else
                        f"Recorded: the money did not go back; the {held:,} held words are back on the balance. "
                        "The payment can be refunded again.", "success")


def reverse_menu_payment(db, config, trans_id: str, *, actor: str, reason: str) -> RepairResult:
    """Send an unmatched menu payment back to the payer through M-Pesa (no words were credited)."""
    reason = _reason(reason)
    if not claims.enabled(config):
        raise RepairError("No initiator settings: M-Pesa cannot send money back from here; send it back by hand.")
    try:
        reversal = refunds.request_unmatched(db, config, (trans_id or "").strip().upper(), actor=actor,
                                             reason=reason)
    except refunds.RefundRefused as exc:
        raise RepairError(str(exc)) from None
    audit.record(db, actor=actor, action="reversal", target_type="c2b_payment", target_id=trans_id,
                       reason=reason, before={"state": "review"},
                       after={"reversal": reversal["_id"], "amount_kes": reversal["amount"]}, result=reversal["state"])
    return RepairResult(f"Reversal of KES {reversal['amount']:,} for {trans_id} queued: the worker sends it to "
                        "M-Pesa within seconds. If M-Pesa refuses it, it goes back under review.", "info")

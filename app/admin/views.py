"""The operator console's pages. Views parse input, call one service, then answer."""
from __future__ import annotations

import logging
import time
from datetime import datetime

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from ..db import get_db
from ..payments import refunds
from ..pagination import paginate, requested_page
from ..payments import settlement
from ..security import safe_next
from . import bp, export, labels, repairs, reversals, store
from ..auth.recovery import CannotIssueLink, OperatorLink, operator_reset_link
from .forms import ResetLinkForm
from .forms import (AdjustForm, AskDarajaForm, AssignMenuPaymentForm, PaymentFilterForm, RefundForm, RequeueJobForm,
                    ReversalOutcomeForm, ReverseForm, ReverseMenuPaymentForm, ReviewForm)

log = logging.getLogger("lipia.admin")

PER_PAGE = 25


@bp.before_request
def _admins_only():
    """Anonymous visitors are sent to log in; customers get 403."""
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()
    if not current_user.is_admin:
        abort(403, "This page is for Lipia's operators.")
    return None


@bp.after_request
def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


@bp.errorhandler(404)
def _not_found_in_the_console(exc):
    """An unknown payment, user or job: said inside the console (only an operator gets this far)."""
    return render_template("admin/not_found.html", message=exc.description), 404


def _actor() -> str:
    return current_user.username


def _page() -> int:
    return requested_page(request.args)


def _run(action, success_url: str, failure):
    """Run one repair: flash its result and redirect, or show why nothing was changed."""
    try:
        result = action()
    except repairs.RepairError as exc:
        flash(f"{exc} Nothing was changed.", "danger")
        return failure()
    flash(result.message, result.category)
    return redirect(success_url)


# ---------------------------------------------------------------- dashboard

@bp.route("/")
def dashboard(status: int = 200):
    """The console's front page: payments by state, the queue and its dead letters, what needs an operator."""
    return render_template("admin/dashboard.html", d=store.dashboard(get_db()),
                           requeue_form=RequeueJobForm(prefix="requeue", formdata=None)), status


# ---------------------------------------------------------------- payments

def _payment_filter(args) -> tuple[PaymentFilterForm, store.PaymentFilter, dict | None]:
    """The search form, the filter, and its query (None when the input is bad)."""
    form = PaymentFilterForm(args)
    filters = store.PaymentFilter(**{name: (args.get(name) or "").strip()[:128]
                                     for name in store.PaymentFilter.__dataclass_fields__})
    if not form.validate():
        return form, filters, None
    try:
        return form, filters, filters.query()
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        target = {"dates": form.date_from}.get(field) or getattr(form, field, form.status)
        target.errors = list(target.errors) + [str(exc).split(": ", 1)[-1]]
        return form, filters, None


@bp.route("/payments")
def payments():
    """Payments searched by status, phone, receipt, user or date, a page at a time."""
    form, filters, query = _payment_filter(request.args)
    rows, total, page, pages = [], 0, 1, 1
    if query is not None:
        rows, total, page, pages = paginate(
            lambda p: store.search_payments(get_db(), query, page=p, per_page=PER_PAGE), _page(), PER_PAGE)
    return render_template("admin/payments.html", form=form, filters=filters.args(), payments=rows, total=total,
                           page=page, pages=pages), (200 if query is not None else 400)


def _payment_page(payment_id, status: int = 200, refund_preview=None, **forms):
    detail = store.payment_detail(get_db(), payment_id)
    if detail is None:
        abort(404, "There is no such payment.")
    payment = detail["payment"]
    defaults = {
        "ask": AskDarajaForm(prefix="ask", formdata=None),
        "review": ReviewForm(prefix="review", formdata=None),
        # Empty on purpose: the operator types what goes back, it is never one click from a full refund.
        "refund": RefundForm(prefix="refund", formdata=None),
        "requeue": RequeueJobForm(prefix="requeue", formdata=None),
        "reverse": ReverseForm(prefix="reverse", formdata=None),
        "outcome": ReversalOutcomeForm(prefix="outcome", formdata=None),
    }
    defaults.update(forms)
    # What a reversal would hold and send back, as the balance stands (only a credited payment offers one).
    reversal_preview = refunds.preview(get_db(), payment) if payment.get("credited") else None
    return render_template("admin/payment.html", d=detail, p=payment, forms=defaults,
                           ending=labels.ending(payment), via_label=labels.short_source,
                           reversal_label=labels.reversal_state, reversal_preview=reversal_preview,
                           refund_preview=refund_preview, refresh=store.awaiting_query_answer(payment),
                           unpaid=settlement.unpaid_review(payment) if payment["status"] == "review" else None), status


@bp.route("/payments/<payment_id>")
def payment(payment_id):
    """One payment in full: its history, Daraja's exchanges, its callbacks and the operator's actions."""
    return _payment_page(payment_id)


@bp.route("/payments/<payment_id>/ask-daraja", methods=["POST"])
def ask_daraja(payment_id):
    """Ask Daraja about a payment now (STK Query), with the operator's reason."""
    form = AskDarajaForm(prefix="ask")
    if not form.validate_on_submit():
        return _payment_page(payment_id, 400, ask=form)
    return _run(lambda: repairs.ask_daraja(get_db(), current_app.config, payment_id, actor=_actor(),
                                           reason=form.reason.data),
                url_for("admin.payment", payment_id=payment_id), lambda: _payment_page(payment_id, 400, ask=form))


@bp.route("/payments/<payment_id>/review", methods=["POST"])
def review(payment_id):
    """Approve or reject a payment held for review (the words are credited only on approval)."""
    form = ReviewForm(prefix="review")
    if not form.validate_on_submit():
        return _payment_page(payment_id, 400, review=form)
    return _run(lambda: repairs.resolve_review(get_db(), payment_id, actor=_actor(),
                                               approve=form.decision.data == "approve", reason=form.reason.data),
                url_for("admin.payment", payment_id=payment_id), lambda: _payment_page(payment_id, 400, review=form))


@bp.route("/payments/<payment_id>/refund", methods=["POST"])
def refund(payment_id):
    """Record a refund in two steps: the figures as typed, then what will happen, confirmed."""
    form = RefundForm(prefix="refund")
    if not form.validate_on_submit():
        return _payment_page(payment_id, 400, refund=form)
    if form.confirmed.data != "yes":
        try:
            preview = repairs.preview_refund(get_db(), payment_id, words=form.words.data,
                                             amount_kes=form.amount_kes.data)
        except repairs.RepairError as exc:
            flash(f"{exc} Nothing was changed.", "danger")
            return _payment_page(payment_id, 400, refund=form)
        return _payment_page(payment_id, refund=form, refund_preview=preview)
    return _run(lambda: repairs.refund_payment(get_db(), payment_id, actor=_actor(), reason=form.reason.data,
                                               words=form.words.data, amount_kes=form.amount_kes.data),
                url_for("admin.payment", payment_id=payment_id), lambda: _payment_page(payment_id, 400, refund=form))


@bp.route("/payments/<payment_id>/reverse", methods=["POST"])
def reverse(payment_id):
    """Send M-Pesa a Reversal of a paid payment, taking back its words as the operator chose."""
    form = ReverseForm(prefix="reverse")
    if not form.validate_on_submit():
        return _payment_page(payment_id, 400, reverse=form)
    return _run(lambda: reversals.reverse_payment(get_db(), current_app.config, payment_id, actor=_actor(),
                                                reason=form.reason.data, words_mode=form.words_mode.data),
                url_for("admin.payment", payment_id=payment_id), lambda: _payment_page(payment_id, 400, reverse=form))


@bp.route("/payments/<payment_id>/reversal-outcome", methods=["POST"])
def reversal_outcome(payment_id):
    """Record from the M-Pesa statement how a reversal ended that M-Pesa never told us about."""
    form = ReversalOutcomeForm(prefix="outcome")
    if not form.validate_on_submit():
        return _payment_page(payment_id, 400, outcome=form)
    return _run(lambda: reversals.settle_reversal(get_db(), payment_id, sent=form.outcome.data == "sent",
                                                actor=_actor(), reason=form.reason.data),
                url_for("admin.payment", payment_id=payment_id), lambda: _payment_page(payment_id, 400, outcome=form))


# ---------------------------------------------------------------- menu (C2B) payments under review

MENU_PAYMENTS_SHOWN = 100


def _menu_payments_page(status: int = 200, form=None):
    rows = list(get_db().c2b_payments.find({"state": "review"}).sort("received_at", -1).limit(MENU_PAYMENTS_SHOWN))
    return render_template("admin/c2b.html", rows=rows, form=form or AssignMenuPaymentForm(formdata=None)), status


@bp.route("/menu-payments")
def menu_payments():
    """Payments made from the M-Pesa menu that could not be credited as they stand."""
    return _menu_payments_page()


@bp.route("/menu-payments/assign", methods=["POST"])
def assign_menu_payment():
    """Settle a menu (C2B) payment under review against the order the operator names."""
    form = AssignMenuPaymentForm()
    if not form.validate_on_submit():
        return _menu_payments_page(400, form)
    return _run(lambda: repairs.assign_menu_payment(get_db(), current_app.config, form.trans_id.data,
                                                    form.payment_id.data, actor=_actor(), reason=form.reason.data),
                url_for("admin.menu_payments"), lambda: _menu_payments_page(400, form))


@bp.route("/menu-payments/reverse", methods=["POST"])
def reverse_menu_payment():
    """Send an unmatched menu (C2B) payment back to the payer through a Reversal."""
    form = ReverseMenuPaymentForm()
    if not form.validate_on_submit():
        return _menu_payments_page(400)
    return _run(lambda: reversals.reverse_menu_payment(get_db(), current_app.config, form.trans_id.data,
                                                     actor=_actor(), reason=form.reason.data),
                url_for("admin.menu_payments"), lambda: _menu_payments_page(400))


# ---------------------------------------------------------------- jobs

@bp.route("/jobs/<job_id>/requeue", methods=["POST"])
def requeue(job_id):
    """Give a dead job a fresh set of attempts (not when its payment has moved on)."""
    form = RequeueJobForm(prefix="requeue")
    job = store.get_job(get_db(), job_id)
    if job is None:
        abort(404, "There is no such job.")
    back = safe_next(request.form.get("next")) or url_for("admin.dashboard")

    def failure():
        if job.get("payment_id") and store.payment_detail(get_db(), job["payment_id"]):
            return _payment_page(job["payment_id"], 400, requeue=form)
        return dashboard(400)

    if not form.validate_on_submit():
        return failure()
    return _run(lambda: repairs.requeue_job(get_db(), job_id, actor=_actor(), reason=form.reason.data),
                back, failure)


# ---------------------------------------------------------------- users

@bp.route("/users")
def users():
    """Accounts searched by name or phone, a page at a time."""
    q = (request.args.get("q") or "").strip()[:64]
    rows, total, page, pages = paginate(
        lambda p: store.search_users(get_db(), q, page=p, per_page=PER_PAGE), _page(), PER_PAGE)
    return render_template("admin/users.html", users=rows, q=q, total=total, page=page, pages=pages)


def _user_page(username: str, status: int = 200, adjust_form: AdjustForm | None = None, **extra):
    def fetch(p):
        found = store.user_detail(get_db(), username, page=p, per_page=PER_PAGE)
        return found, found["entries_total"] if found else 0
    detail, _total, page, pages = paginate(fetch, _page(), PER_PAGE)
    if detail is None:
        abort(404, "There is no such user.")
    return render_template("admin/user.html", d=detail, u=detail["user"], page=page, pages=pages,
                           adjust_form=adjust_form or AdjustForm(prefix="adjust", formdata=None),
                           reset_form=extra.pop("reset_form", None) or ResetLinkForm(prefix="reset", formdata=None),
                           **extra), status


@bp.route("/users/<username>")
def user(username):
    """One account: its balance, payments and ledger entries, and the form to adjust its words."""
    return _user_page(username, reset_link=_take_reset_link(username))


@bp.route("/users/<username>/adjust", methods=["POST"])
def adjust(username):
    """Credit or debit an account's words by hand, with a reason for the audit log."""
    form = AdjustForm(prefix="adjust")
    if not form.validate_on_submit():
        return _user_page(username, 400, form)
    delta = form.words.data if form.direction.data == "credit" else -form.words.data
    return _run(lambda: repairs.adjust_words(get_db(), username, delta, actor=_actor(), reason=form.reason.data,
                                             request_key=form.request_key.data),
                url_for("admin.user", username=username), lambda: _user_page(username, 400, form))


@bp.route("/users/<username>/reset-link", methods=["POST"])
def password_reset_link(username):
    """A one-time reset link, shown on this answer only (no-store) for the operator to pass on."""
    form = ResetLinkForm(prefix="reset")
    if not form.validate_on_submit():
        return _user_page(username, 400, reset_form=form)
    try:
        link = operator_reset_link(get_db(), current_app.config, username, actor=_actor(), reason=form.reason.data)
    except CannotIssueLink as exc:
        flash(f"{exc} Nothing was changed.", "danger")
        return _user_page(username, 400, reset_form=form)
    # Post, redirect, show once (as the API key): a reload of the page issues no second link.
    session[RESET_LINK_SESSION] = {"for": link.username, "url": link.url, "until": link.valid_until.isoformat(),
                                   "at": time.time()}
    return redirect(url_for("admin.user", username=username), code=303)


RESET_LINK_SESSION = "operator_reset_link"
RESET_LINK_SHOWN_FOR_SECONDS = 300


def _take_reset_link(username: str):
    """The link just issued for this user, once; it leaves the session as it is shown."""
    pending = session.get(RESET_LINK_SESSION)
    if not isinstance(pending, dict) or pending.get("for") != username:
        return None
    session.pop(RESET_LINK_SESSION, None)
    if time.time() - float(pending.get("at", 0)) > RESET_LINK_SHOWN_FOR_SECONDS:
        return None
    return OperatorLink(url=pending["url"], valid_until=datetime.fromisoformat(pending["until"]), username=username)


# ---------------------------------------------------------------- audit log

@bp.route("/audit")
def audit():
    """The operators' audit log, filtered by action, operator or target."""
    args = {name: (request.args.get(name) or "").strip()[:100] for name in ("action", "actor", "target")}
    rows, total, page, pages = paginate(
        lambda p: store.audit_page(get_db(), **args, page=p, per_page=PER_PAGE), _page(), PER_PAGE)
    return render_template("admin/audit.html", entries=rows, args=args, total=total, page=page,
                           link_args={k: v for k, v in args.items() if v},
                           pages=pages, actions=sorted(export.AUDIT_ACTIONS))


# ---------------------------------------------------------------- CSV exports

def _exports_page(status: int = 200, form: PaymentFilterForm | None = None, ledger_args: dict | None = None,
                  ledger_error: str | None = None):
    return render_template("admin/exports.html", form=form or PaymentFilterForm(formdata=None),
                           ledger=ledger_args or {}, ledger_error=ledger_error), status


@bp.route("/exports")
def exports():
    """The two CSV exports, each with the Kenyan days to pick."""
    return _exports_page()


@bp.route("/export/payments.csv")
def export_payments():
    """Payments matching the search as CSV; the export is audited before its first row."""
    form, filters, query = _payment_filter(request.args)
    if query is None:
        return _exports_page(400, form=form)
    db = get_db()
    export.record(db, actor=_actor(), what="payments", date_from=filters.date_from, date_to=filters.date_to,
                  filters={k: v for k, v in filters.args().items() if k not in ("date_from", "date_to")},
                  rows=store.count_payments(db, query))
    # Which filters, not their values: a phone number typed as 07... would escape the log's masking.
    log.info("operator %s exported payments filtered by %s", _actor(), sorted(filters.args()) or "nothing")
    return export.csv_response("payments", export.PAYMENT_COLUMNS, store.payment_cursor(db, query))


@bp.route("/export/ledger.csv")
def export_ledger():
    """Ledger entries of the chosen Kenyan days as CSV; the export is audited before its first row."""
    args = {name: (request.args.get(name) or "").strip()[:64] for name in ("from", "to", "username")}
    try:
        query = export.ledger_query(args["from"], args["to"], args["username"])
    except ValueError as exc:
        return _exports_page(400, ledger_args=args, ledger_error=f"Cannot export the ledger: {exc}.")
    db = get_db()
    export.record(db, actor=_actor(), what="ledger", date_from=args["from"], date_to=args["to"],
                  filters={"username": args["username"]}, rows=store.count_ledger(db, query))
    log.info("operator %s exported the ledger from %s to %s", _actor(), args["from"] or "-", args["to"] or "-")
    return export.csv_response("ledger", export.LEDGER_COLUMNS, store.ledger_cursor(db, query))

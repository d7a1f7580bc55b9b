import uuid

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..db import get_db
from ..errors import api_error
from ..extensions import limiter
from ..pagination import paginate, requested_page
from ..plans.service import get_plan
from . import bp, callbacks, checkout, records
from . import actions, handover, tasks
from .forms import CancelForm, CheckoutForm, PaymentActionForm
from .status import balance_to_show, describe
from .words import word_history

PER_PAGE = 10


def _payment_limit():
    return current_app.config["PAYMENT_RATE_LIMIT"]


def _user_key():
    # Per account, not per log-in (get_id() names the log-in too): logging in again must
    # not buy another round of prompts to any number.
    return f"checkout:{current_user.id}"


@bp.route("/checkout/<plan_code>", methods=["GET", "POST"])
@login_required
@limiter.limit(_payment_limit, methods=["POST"], key_func=_user_key)
def checkout_view(plan_code):
    """The checkout form for a plan: the phone to pay from; starts the payment and its STK push."""
    db = get_db()
    plan = get_plan(db, plan_code, max_age=current_app.config["PLAN_CACHE_SECONDS"])
    if plan is None:
        abort(404, _("There is no such plan. Pick one from the plans page."))
    # After "Use another number" the field starts empty: the saved number was the wrong one.
    phone = "" if request.args.get("phone") == "other" else current_user.phone_number
    form = CheckoutForm(data={"phone_number": phone, "idempotency_key": uuid.uuid4().hex})
    if form.validate_on_submit():
        result = checkout.start(db, current_app.config, user=current_user, plan=plan,
                                phone=form.phone_number.data, idempotency_key=form.idempotency_key.data)
        if result.reason == "waiting":
            flash(_("You already have a payment waiting on your phone. Finish or cancel it first."), "warning")
        elif result.created:
            handover.hand_over(result.payment)  # the page it redirects to need not read it back
        return redirect(url_for("payments.show", payment_id=result.payment["_id"]))
    status = 400 if request.method == "POST" else 200
    return render_template("payments/checkout.html", plan=plan, form=form), status


def _owned(payment_id):
    payment = records.get_for_owner(get_db(), payment_id, current_user.username)
    if payment is None:
        abort(404, _("We could not find that payment on your account."))
    return payment


def _describe(payment):
    # Two reads per poll: the session's user and the payment (everything it shows lives there).
    return describe(payment, prompt_timeout=current_app.config["PROMPT_TIMEOUT_SECONDS"],
                    balance=balance_to_show(payment, current_user.doc))


@bp.route("/payments/<payment_id>")
@login_required
def show(payment_id):
    """One of the customer's payments: the waiting page while it is open, its outcome once settled."""
    payment = handover.take(payment_id, current_user.username) or _owned(payment_id)
    return render_template("payments/show.html", payment=payment, state=_describe(payment),
                           action_form=PaymentActionForm(), cancel_form=CancelForm())


@bp.route("/payments/<payment_id>/status.json")
@login_required
# No limit applies to the poll (two indexed reads of the customer's own payment); exempt, it
# also skips the limiter's search for one on every poll (a few per cent of the poll's time).
@limiter.exempt
def status(payment_id):
    """The payment's state as JSON, polled by its waiting page."""
    payment = records.get_for_owner(get_db(), payment_id, current_user.username)
    if payment is None:
        return api_error(404, "payment_not_found", "No such payment on your account.")
    # The prompt's window just closed without an answer: ask M-Pesa now, not at the next
    # scheduled query (at most once per payment; see actions.ask_after_prompt).
    if actions.ask_after_prompt(get_db(), payment, current_app.config["PROMPT_TIMEOUT_SECONDS"]):
        tasks.ask_now(get_db(), payment["_id"])
        payment = {**payment, "asked_after_prompt": True}
    response = jsonify(_describe(payment))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/payments/<payment_id>/check", methods=["POST"])
@login_required
def check_again(payment_id):
    """The customer asks us to ask M-Pesa about the payment now (STK Query, at most every few seconds)."""
    payment = _owned(payment_id)
    if PaymentActionForm().validate_on_submit():
        asked = records.request_query(get_db(), payment["_id"], current_user.username, min_gap=10)
        if asked:
            tasks.ask_now(get_db(), payment["_id"])
        flash(_("We are asking M-Pesa about this payment now.") if asked else
              _("We asked M-Pesa a moment ago; the answer will show here."), "info")
    return redirect(url_for("payments.show", payment_id=payment["_id"]))


@bp.route("/payments/<payment_id>/cancel", methods=["POST"])
@login_required
def cancel(payment_id):
    """The customer gives up a payment on their phone ("Cancel" / "Use another number")."""
    payment = _owned(payment_id)
    form = CancelForm()
    if not form.validate_on_submit():
        return redirect(url_for("payments.show", payment_id=payment["_id"]))
    cancelled = actions.abandon(get_db(), payment)
    if form.then.data == "another":
        flash(_("We cancelled the earlier prompt. Enter the number to pay with.") if cancelled else
              _("That payment had already ended. Enter the number to pay with."), "info")
        return redirect(url_for("payments.checkout_view", plan_code=payment["plan_code"], phone="other"))
    if not cancelled:
        flash(_("That payment had already ended, so there was nothing to cancel."), "info")
    return redirect(url_for("payments.show", payment_id=payment["_id"]))


@bp.route("/payments/<payment_id>/again", methods=["POST"])
@login_required
@limiter.limit(_payment_limit, key_func=_user_key)
def send_again(payment_id):
    """"Try again" and "Send the prompt again": a new prompt for the same plan and number, in one tap."""
    payment = _owned(payment_id)
    if not PaymentActionForm().validate_on_submit():
        return redirect(url_for("payments.show", payment_id=payment["_id"]))
    db = get_db()
    plan = get_plan(db, payment["plan_code"])
    if plan is None:
        flash(_("That plan is no longer on sale. Pick one from the plans page."), "warning")
        return redirect(url_for("plans.index"))
    result = actions.send_again(db, current_app.config, user=current_user, plan=plan, payment=payment)
    if result.reason == "too_soon":
        flash(_("The first prompt may still reach your phone. You can send a new one in %(num)s seconds.",
                num=result.wait), "warning")
    elif result.reason == "waiting":
        flash(_("You already have a payment waiting on your phone. Finish or cancel it first."), "warning")
    return redirect(url_for("payments.show", payment_id=result.payment["_id"]))


@bp.route("/payments/callback/<payment_id>/<secret>", methods=["POST"])
def callback(payment_id, secret):
    """Daraja's result for one payment: kept (or spooled), then settled; always "Accepted"."""
    callbacks.receive(get_db(), current_app.config, payment_id=payment_id[:64], secret=secret[:128],
                      raw=request.get_data(cache=False), remote_addr=request.remote_addr,
                      content_type=request.content_type)
    return jsonify(callbacks.ACCEPTED)


# Each web process replays its own callback spool once the database is back.
bp.before_app_request(callbacks.ensure_replayer)


@bp.route("/history")
@login_required
def history():
    """The customer's payments and word usage, a page of each at a time."""
    rows, _total, page, pages = paginate(
        lambda p: records.list_for_user(get_db(), current_user.username, page=p, per_page=PER_PAGE),
        requested_page(request.args), PER_PAGE)
    usage, _usage_total, usage_page, usage_pages = paginate(
        lambda p: word_history(get_db(), current_user.username, page=p, per_page=PER_PAGE),
        requested_page(request.args, "usage_page"), PER_PAGE)
    return render_template("payments/history.html", payments=rows, page=page, pages=pages,
                           usage=usage, usage_page=usage_page, usage_pages=usage_pages,
                           prompt_timeout=current_app.config["PROMPT_TIMEOUT_SECONDS"])

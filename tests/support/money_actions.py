"""The money simulation's steps: what customers, strangers, Daraja, operators and the worker do.

Each action takes the simulation, does one thing through the app's own functions, and
returns a line for the step list (None when it found nothing to do: another is chosen). Orders are named by their number in the run (never by
a database id), so a replay prints the same lines.
"""
from __future__ import annotations

from app import ledger, queue
from app.payments import c2b, callback_signing, callbacks, checkout, claims, refunds, tasks
from app.plans.service import get_plan
from tests.support import money_world as mw
from tests.support.money_faults import WRITE_COLLECTIONS, Crash
from tests.support.money_sim import CUSTOMERS, Order

REMOTE = "196.201.214.200"
JSON = "application/json"
PAYABLE = ("pending", "failed", "cancelled", "timeout", "expired")


def _order_of(sim, payment_id):
    return next((o for o in sim.orders if str(o.payment_id) == str(payment_id)), None)


def _name(sim, payment_id) -> str:
    order = _order_of(sim, payment_id)
    return f"#{order.number}" if order else "?"


def _pick(sim, items):
    items = list(items)
    return sim.rng.choice(items) if items else None


def _orders(sim, statuses):
    return [o for o in sim.orders if sim.payment(o)["status"] in statuses]


# ---------------------------------------------------------------- customers

def check_out(sim) -> str:
    name = sim.rng.choice([c for c, _ in CUSTOMERS])
    user = sim.users[name]
    plan = get_plan(sim.db, sim.rng.choice(["basic", "basic", "premium"]))
    result = checkout.start(sim.db, sim.settings, user=user, plan=plan, phone=user.phone_number,
                            idempotency_key=f"sim-{len(sim.orders)}-{sim.rng.random():.6f}")
    if not result.created:
        return f"{name} checks out: shown order {_name(sim, result.payment['_id'])} still on the phone"
    order = Order(len(sim.orders) + 1, name, user.phone_number, result.payment["_id"],
                      result.payment["amount"], result.payment["reference"])
    sim.orders.append(order)
    return f"{name} checks out order #{order.number} (KES {order.amount})"


def answer_prompt(sim) -> str:
    waiting = [p for p in sim.world.prompt_of.values()
               if p.reached and not p.lapse_if_old(sim.clock.now) and p.answer is None]
    prompt = _pick(sim, waiting)
    if prompt is None:
        return None
    order = sim.orders[prompt.order - 1]
    prompt.answer = sim.rng.choices(["paid", "cancelled", "insufficient"], [6, 2.5, 1.5])[0]
    money = None
    if prompt.answer == "paid":
        money = sim.world.pay(order.amount, order.phone, "stk", order.number)
        prompt.receipt = money.receipt
    body = mw.stk_callback(prompt.checkout_request_id, mw.RESULT_CODES[prompt.answer], money)
    fate = sim.rng.choices(["now", "late", "lost", "twice"], [5, 2.5, 1, 1.5])[0]
    if fate in ("now", "twice"):
        effect = _deliver_callback(sim, order.payment_id, body)
        if fate == "twice":
            sim.callbacks_late.append((str(order.payment_id), body))
    else:
        effect = "-"
        if fate == "late":
            sim.callbacks_late.append((str(order.payment_id), body))
    return (f"{order.user} answers order #{order.number}'s prompt: {prompt.answer}"
            f"{' (' + money.receipt + ')' if money else ''}; callback {fate} -> {effect}")


def _deliver_callback(sim, payment_id: str, body: bytes) -> str:
    return callbacks.receive(sim.db, sim.settings, payment_id=str(payment_id),
                             secret=callback_signing.token(sim.settings, payment_id), raw=body,
                             remote_addr=REMOTE, content_type=JSON)


def late_callback(sim) -> str:
    if not sim.callbacks_late:
        return None
    payment_id, body = sim.callbacks_late.pop(sim.rng.randrange(len(sim.callbacks_late)))
    return f"a late callback for order {_name(sim, payment_id)} arrives -> {_deliver_callback(sim, payment_id, body)}"


def menu_payment(sim) -> str:
    order = _pick(sim, sim.orders)
    if order is None:
        return None
    kind = sim.rng.choices(["right", "wrong", "stranger-1", "stranger-full", "unknown"], [5, 1.5, 1.5, 1, 0.5])[0]
    payer = sim.users["eve"].phone_number if kind.startswith("stranger") else order.phone
    amount = {"right": order.amount, "wrong": order.amount // 2, "stranger-1": 1}.get(kind, order.amount)
    account = order.reference if kind != "unknown" else "LIPIAZZZZZZ"
    money = sim.world.pay(amount, payer, "c2b")
    body = mw.c2b_confirmation(money, account)
    effect = _deliver_c2b(sim, body)
    if sim.rng.random() < 0.15:
        effect += " / again: " + _deliver_c2b(sim, body)
    return f"menu payment {money.receipt} ({kind}, KES {amount}) for order #{order.number}'s account -> {effect}"


def _deliver_c2b(sim, body: bytes) -> str:
    return c2b.handle_confirmation(sim.db, sim.settings, secret=sim.settings["MPESA_C2B_URL_SECRET"], raw=body,
                                   remote_addr=REMOTE, content_type=JSON)


def claim_receipt(sim) -> str:
    order = _pick(sim, _orders(sim, PAYABLE))
    if order is None:
        return None
    own = [m for m in sim.world.money.values() if m.phone == order.phone]
    theirs = [m for m in sim.world.money.values() if m.phone != order.phone]
    sent_back = [m for m in sim.world.money.values() if m.reversed]
    kind = sim.rng.choices(["own", "another's", "sent back", "made up"], [5, 1.5, 1.5, 1])[0]
    money = _pick(sim, {"own": own, "another's": theirs, "sent back": sent_back}.get(kind, []))
    if money is None:
        kind = "made up"
    receipt = money.receipt if money else sim.world.code("Q")
    try:
        claims.start(sim.db, sim.settings, sim.payment(order), order.user, receipt)
    except claims.ClaimRefused as exc:
        return f"{order.user} claims {kind} receipt {receipt} on order #{order.number}: refused ({exc})"
    return f"{order.user} claims {kind} receipt {receipt} on order #{order.number}"


def claim_result(sim) -> str:
    if not sim.world.status_requests:
        return None
    request = sim.world.status_requests.pop(sim.rng.randrange(len(sim.world.status_requests)))
    fate = sim.rng.choices(["answer", "timeout", "lost", "twice"], [6, 1, 1, 1])[0]
    if fate == "lost":
        return f"Transaction Status result for {request['receipt']} is lost"
    raw = mw.status_result(sim.world, request["receipt"]) if fate != "timeout" else b"{}"
    effects = [claims.handle_result(sim.db, sim.settings, claim_id=request["label"], secret=request["secret"], raw=raw,
                                    timed_out=fate == "timeout", remote_addr=REMOTE, content_type=JSON)
               for _ in range(2 if fate == "twice" else 1)]
    return f"Transaction Status {fate} for {request['receipt']} -> {' / '.join(effects)}"


def spend(sim) -> str:
    name = sim.rng.choice(["amina", "baraka", "chiku"])
    have = ledger.balance(sim.db, name)
    words = sim.rng.randint(1, max(1, have + 2_000))
    try:
        result = ledger.spend(sim.db, name, words, f"sim-{sim.rng.random():.8f}", channel="api")
    except ledger.InsufficientWords:
        return f"{name} tries to spend {words:,} of {have:,} words: refused"
    return f"{name} spends {words:,} words (left {result.balance:,})"


# ---------------------------------------------------------------- Daraja and the worker

def worker_job(sim) -> str:
    plan = sim.rng.choices(["ok", "unknown", "unknown-lost", "refused"], [17, 1, 1, 1])[0]
    sim.daraja.push_plan = [plan]
    job = queue.claim(sim.db, "sim-worker", sim.settings["JOB_LEASE_SECONDS"])
    if job is None:
        return None
    sim.worker._run_job(job)
    return f"worker runs {job.kind} of order {_name(sim, job.payment_id)}" + (
        f" (Daraja: {plan})" if job.kind == "stk_push" else "")


def query_pass(sim) -> str:
    return f"STK Query pass: {tasks.reconcile_due(sim.db, sim.daraja, sim.settings)} asked"


def tick(sim) -> str:
    seconds = sim.rng.choice([5, 30, 95, 95, 300, 960])
    sim.clock.advance(seconds)
    # Minutes never pass with work waiting: the worker runs its queue meanwhile (a bounded few).
    ran = 0
    while seconds >= 300 and ran < 10 and worker_job(sim):
        ran += 1
    sim.housekeeping()
    return f"{seconds} s pass; {ran} jobs run; housekeeping" if ran else f"{seconds} s pass; housekeeping"


# ---------------------------------------------------------------- operators

def ledger_refund(sim) -> str:
    from app.admin import repairs
    order = _pick(sim, _orders(sim, ("completed",)))
    if order is None:
        return None
    payment = sim.payment(order)
    words = min(payment["words"], ledger.balance(sim.db, order.user))
    if words < 1:
        return f"ledger refund of order #{order.number}: no words left"
    words = sim.rng.randint(1, words)
    result = repairs.refund_payment(sim.db, payment["_id"], actor="ops1", reason="customer asked", words=words,
                                    amount_kes=payment["amount"] * words // payment["words"])
    return f"ops1 refunds order #{order.number} by hand ({words:,} words): {result.message[:60]}"


def reverse(sim) -> str:
    from app.admin import reversals
    order = _pick(sim, _orders(sim, ("completed",)))
    if order is None:
        return None
    sim.daraja.reversal_plan = [sim.rng.choices(["ok", "unknown", "refused"], [8, 1, 1])[0]]
    mode = sim.rng.choice(["whole", "unspent"])
    result = reversals.reverse_payment(sim.db, sim.settings, order.payment_id, actor="ops2", reason="customer asked",
                                     words_mode=mode)
    return f"ops2 reverses order #{order.number} ({mode}, {sim.daraja.reversal_plan or 'sent'}): {result.message[:60]}"


def reversal_result(sim) -> str:
    if not sim.world.reversal_requests:
        return None
    request = sim.world.reversal_requests.pop(sim.rng.randrange(len(sim.world.reversal_requests)))
    fate = sim.rng.choices(["ok", "failed", "timeout", "lost", "twice"], [6, 2, 1, 1, 1])[0]
    if fate == "lost":
        return f"Reversal result for {request['receipt']} is lost"
    ok = fate in ("ok", "twice")
    raw = mw.reversal_result(ok) if fate != "timeout" else b"{}"
    effects = [refunds.handle_result(sim.db, sim.settings, payment_id=request["label"], secret=request["secret"],
                                     raw=raw, timed_out=fate == "timeout", remote_addr=REMOTE, content_type=JSON)
               for _ in range(2 if fate == "twice" else 1)]
    if ok and request["receipt"] in sim.world.money:
        sim.world.money[request["receipt"]].reversed = True
    return f"Reversal {fate} for {request['receipt']} (KES {request['amount']}) -> {' / '.join(effects)}"


def settle_unanswered_reversal(sim) -> str:
    """An operator reads the statement for a reversal M-Pesa left unknown, once M-Pesa will say nothing more."""
    from app.admin import reversals
    outstanding = {r["label"] for r in sim.world.reversal_requests}
    unknown = [r for r in sim.db.reversals.find({"state": "unknown"}, {"secret": 0})
               if r["_id"].removeprefix("reversal:") not in outstanding]
    reversal = _pick(sim, unknown)
    if reversal is None:
        return None
    money = sim.world.money.get(reversal["receipt"])
    sent = bool(money and money.reversed)
    result = reversals.settle_reversal(sim.db, reversal["payment_id"], sent=sent, actor="ops1", reason="the statement")
    return f"ops1 settles reversal {reversal['_id']} by hand ({'sent' if sent else 'not sent'}): {result.message[:50]}"


def _unmatched(sim):
    return [d["_id"] for d in sim.db.c2b_payments.find({"state": "review", "payment_id": {"$exists": False}})]


def send_back_menu_payment(sim) -> str:
    from app.admin import reversals
    trans_id = _pick(sim, _unmatched(sim))
    if trans_id is None:
        return None
    sim.daraja.reversal_plan = [sim.rng.choices(["ok", "unknown", "refused"], [8, 1, 1])[0]]
    result = reversals.reverse_menu_payment(sim.db, sim.settings, trans_id, actor="ops2", reason="not ours")
    return f"ops2 sends menu payment {trans_id} back: {result.message[:60]}"


def assign_menu_payment(sim) -> str:
    from app.admin import repairs
    trans_id = _pick(sim, _unmatched(sim))
    if trans_id is None:
        return None
    money = sim.world.money.get(trans_id)
    candidates = [o for o in _orders(sim, PAYABLE) if money and o.phone == money.phone]
    order = _pick(sim, candidates)
    if order is None:
        return f"assign {trans_id}: no open order of its payer"
    result = repairs.assign_menu_payment(sim.db, sim.settings, trans_id, str(order.payment_id), actor="ops1",
                                         reason="payer called")
    return f"ops1 assigns menu payment {trans_id} to order #{order.number}: {result.message[:60]}"


def review(sim) -> str:
    from app.admin import repairs
    order = _pick(sim, _orders(sim, ("review",)))
    if order is None:
        return None
    approve = sim.rng.random() < 0.5
    result = repairs.resolve_review(sim.db, order.payment_id, actor="ops1", approve=approve, reason="checked")
    return f"ops1 {'approves' if approve else 'rejects'} order #{order.number}: {result.message[:60]}"


# ---------------------------------------------------------------- a process dying between two writes

CRASHABLE = ("answer_prompt", "late_callback", "menu_payment", "claim_result", "worker_job", "query_pass", "tick",
             "ledger_refund", "reverse", "reversal_result", "send_back_menu_payment", "assign_menu_payment", "review",
             "settle_unanswered_reversal", "spend", "check_out")


def crash(sim) -> str:
    name = sim.rng.choice(CRASHABLE)
    collection = sim.rng.choice(WRITE_COLLECTIONS)
    nth, when = sim.rng.randint(1, 3), sim.rng.choice(["before", "after"])
    hard = sim.rng.random() < 0.85
    sim.faults.arm(name, collection, nth, when, crash=hard)
    action = globals()[name]
    try:
        text = action(sim)
    except Exception as exc:  # the database error reached the caller (a 500, a job retried)
        if sim.faults.fired is None:
            raise
        text = f"{name}: {type(exc).__name__} escaped"
    except Crash:
        fired = sim.faults.disarm()
        sim.restart()
        return f"{name} dies at {fired}; worker restarted"
    fired = sim.faults.disarm()
    if fired is None:
        return None if text is None else f"{text} (armed {collection} #{nth}, never reached)"
    sim.restart()
    return f"{text} [fault at {fired}{'' if hard else ', a database error'}; worker restarted]"


WEIGHTS = {check_out: 10, worker_job: 14, answer_prompt: 10, late_callback: 5, query_pass: 4, tick: 8,
           menu_payment: 7, claim_receipt: 6, claim_result: 5, spend: 8, ledger_refund: 3, reverse: 4,
           reversal_result: 5, send_back_menu_payment: 2, assign_menu_payment: 2, review: 3,
           settle_unanswered_reversal: 1, crash: 8}


def choose(sim):
    actions = list(WEIGHTS)
    return sim.rng.choices(actions, [WEIGHTS[a] for a in actions])[0]

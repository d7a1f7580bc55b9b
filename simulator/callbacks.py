"""Posts the result callback to the merchant's CallBackURL, the way Daraja does.

Daraja posts from its own side, late or never, and practitioners report
duplicates; the modes here reproduce each of those on demand. The merchant's
answer is recorded so tests can check what the merchant said.
"""
from __future__ import annotations

import logging
import threading
import time

import requests

from . import ids
from .state import Push, Store

log = logging.getLogger("simulator.callbacks")

_MAX_RESPONSE_TEXT = 4000


def _post(store: Store, push: Push, body: dict, timeout: float) -> None:
    entry: dict = {"body": body, "status": None, "response": None, "at": ids.now_utc_iso()}
    try:
        reply = requests.post(push.callback_url, json=body, timeout=timeout)
        entry["status"] = reply.status_code
        entry["response"] = reply.text[:_MAX_RESPONSE_TEXT]
    except requests.RequestException as exc:
        # Only the exception's class: its message holds the URL, whose path is a secret.
        entry["error"] = type(exc).__name__
    store.record_callback(push, entry)
    log.info(
        "callback checkout=%s result=%s merchant_status=%s",
        push.checkout_id, push.result_code, entry["status"] or entry.get("error"),
    )


def deliver(store: Store, push: Push, mode: str, delay: float, timeout: float) -> None:
    """Sends push.callback in the background according to the scripted mode."""
    if mode == "none":
        log.info("callback checkout=%s dropped on purpose", push.checkout_id)
        return
    body = push.callback

    def run() -> None:
        if delay > 0:
            time.sleep(delay)
        if not store.is_current(push):
            return  # the simulator was reset meanwhile
        if mode == "twice":
            _post(store, push, body, timeout)
            _post(store, push, body, timeout)
        elif mode == "concurrent":
            barrier = threading.Barrier(2)

            def racer() -> None:
                barrier.wait()
                _post(store, push, body, timeout)

            racers = [threading.Thread(target=racer, daemon=True) for _ in range(2)]
            for t in racers:
                t.start()
            for t in racers:
                t.join()
        else:
            _post(store, push, body, timeout)

    threading.Thread(target=run, name=f"callback-{push.checkout_id}", daemon=True).start()

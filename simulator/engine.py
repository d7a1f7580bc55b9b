"""The life of a prompt: accepted, then answered by the handset, a script or the clock."""
from __future__ import annotations

import logging
import threading
from typing import Any

from . import callbacks, results
from .config import Settings
from .state import Push, Store

log = logging.getLogger("simulator")

CORRECT_PIN = "1234"


def masked(phone: str) -> str:
    return phone[:4] + "*****" + phone[-3:]


class Engine:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store()

    def start_prompt(self, push: Push) -> None:
        """Arms the prompt's timers: the customer's time limit and any scripted answer."""
        log.info("push accepted checkout=%s phone=%s amount=%s", push.checkout_id, masked(push.phone), push.amount)
        self._timer(push, self.settings.prompt_timeout, self.time_out, push.checkout_id)
        script = push.script
        if script is not None and script.after is not None:
            self._timer(push, script.after, self.decide, push.checkout_id,
                        script.result_code, script.result_desc, "script")

    def _timer(self, push: Push, delay: float, fn, *args: Any) -> None:
        timer = threading.Timer(max(0.0, delay), fn, args=args)
        timer.daemon = True
        self.store.add_timer(push, timer)
        timer.start()

    def decide(self, checkout_id: str, code: Any, desc: str | None, by: str) -> Push | None:
        push = self.store.decide(checkout_id, code, desc or results.description(code), by)
        if push is None:
            return None
        log.info("prompt decided checkout=%s result=%s by=%s", checkout_id, code, by)
        script = push.script
        callbacks.deliver(
            self.store,
            push,
            mode=script.callback if script else "normal",
            delay=script.callback_delay if script else 0.0,
            timeout=self.settings.callback_timeout,
        )
        return push

    def enter_pin(self, checkout_id: str, pin: str) -> Push | None:
        if pin != CORRECT_PIN:
            return self.decide(checkout_id, results.WRONG_PIN, None, "handset")
        # A scripted code models what happens after a correct PIN (e.g. insufficient funds).
        push = self.store.get(checkout_id)
        script = push.script if push else None
        if script is not None:
            return self.decide(checkout_id, script.result_code, script.result_desc, "handset")
        return self.decide(checkout_id, results.SUCCESS, None, "handset")

    def cancel(self, checkout_id: str) -> Push | None:
        return self.decide(checkout_id, results.CANCELLED, None, "handset")

    def time_out(self, checkout_id: str, by: str = "timeout") -> Push | None:
        return self.decide(checkout_id, results.TIMEOUT, None, by)

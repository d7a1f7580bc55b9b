"""The waiting page's status polls follow what can happen next, on the page's own (fake) clock.

Fast while the prompt is live, slower and slower once it is over, nothing while the tab is
hidden, one poll at once when it shows again, nothing more once the payment is final. The
page runs against the real stack; its status answers are the server's own, with the status
and the prompt's time left set by the test so that each phase lasts as long as it needs.
Time is Playwright's fake clock, so the test measures the page's plan, not the machine's speed.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.support.web import Customer

from .pages import DEVICES, status_card

pytestmark = pytest.mark.e2e

STEP_MS = 100

# Counts the page's status requests and when (on its clock) it made them.
COUNT_POLLS = """
window.lipiaPolls = [];
const realFetch = window.fetch;
window.fetch = function (url, options) {
  if (String(url).endsWith("/status.json")) { window.lipiaPolls.push(Date.now()); }
  return realFetch.apply(this, arguments);
};
"""

SET_VISIBILITY = """(state) => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => state === "hidden" });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


class WaitingPage:
    def __init__(self, page, payment_id: str) -> None:
        self.page = page
        self.scenario = {"status": "pending", "final": False, "expires_in": 600}
        self.answered = 0
        page.route("**/status.json", self._answer)
        page.add_init_script(COUNT_POLLS)
        page.clock.install()
        page.goto(f"/payments/{payment_id}")
        page.clock.pause_at(page.evaluate("Date.now()") + 50)

    def _answer(self, route) -> None:
        real = route.fetch()
        self.answered += 1
        state = {**real.json(), **self.scenario, "message": f"answer {self.answered}"}
        route.fulfill(response=real, json=state)

    def polls(self) -> list[int]:
        return self.page.evaluate("window.lipiaPolls")

    def settle(self) -> None:
        """Wait until the page has shown the answer to every poll it made (in real time)."""
        asked = len(self.polls())
        if asked:
            expect(status_card(self.page).locator("[data-message]")).to_have_text(f"answer {asked}")

    def run(self, ms: int) -> list[int]:
        """Let `ms` pass on the page's clock, a step at a time, each poll answered before the
        next step; return the page-clock times of the polls made meanwhile."""
        before = len(self.polls())
        for _ in range(ms // STEP_MS):
            self.page.clock.run_for(STEP_MS)
            self.settle()
        return self.polls()[before:]

    def jump(self, ms: int) -> list[int]:
        """Let `ms` pass at once: enough to see whether any poll at all is made."""
        before = len(self.polls())
        self.page.clock.run_for(ms)
        return self.polls()[before:]

    def set_visibility(self, state: str) -> None:
        self.page.evaluate(SET_VISIBILITY, state)


def gaps(times: list[int]) -> list[int]:
    return [later - earlier for earlier, later in zip(times, times[1:])]


def slowing(gaps_ms: list[int]) -> bool:
    """Never faster than the gap before (a gap may come out up to a step long)."""
    return all(later >= earlier - STEP_MS for earlier, later in zip(gaps_ms, gaps_ms[1:]))


def test_polls_adapt_to_the_prompt_and_to_a_hidden_tab(stack, browser):
    customer = Customer(stack.web_url)
    assert customer.register().status_code == 302
    payment_id = customer.checkout("basic")
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    try:
        context.add_cookies([{"name": c.name, "value": c.value, "url": stack.web_url} for c in customer.http.cookies])
        waiting = WaitingPage(context.new_page(), payment_id)

        # The prompt is live on the phone: the answer can come any second, so ask often.
        live = waiting.run(9_000)
        assert len(live) >= 5, live
        assert max(gaps(live)) <= 2_000, gaps(live)

        # The prompt is over: the answer now comes later, so ask less and less often.
        waiting.scenario["expires_in"] = 0
        waiting.run(2_000)  # the answer that says so
        over = waiting.run(90_000)
        slow = gaps(over)
        assert len(over) <= 12, f"{len(over)} polls in 90 s after the prompt: {slow}"
        assert min(slow) >= 3_000 and slowing(slow), slow
        assert max(slow) > min(slow), "the pace never slowed down"

        # Hidden (the customer went to the M-Pesa prompt): no poll at all, however long.
        waiting.set_visibility("hidden")
        waiting.settle()
        assert waiting.jump(120_000) == []

        # Shown again: one poll at once, before any time passes on the page's clock.
        asked = len(waiting.polls())
        waiting.set_visibility("visible")
        assert len(waiting.polls()) == asked + 1
        waiting.settle()

        # Final: the answer that says so is the last request.
        waiting.scenario.update(status="completed", final=True)
        final_answer = waiting.run(20_000)
        assert len(final_answer) == 1, final_answer
        expect(status_card(waiting.page)).to_have_attribute("data-final", "true")
        assert waiting.jump(120_000) == []
        waiting.set_visibility("hidden")
        waiting.set_visibility("visible")
        assert waiting.jump(5_000) == [] and len(waiting.polls()) == asked + 2
    finally:
        context.close()

"""Accessibility checks on the page as it is now: axe-core plus what axe cannot judge alone.

axe is loaded with a context init script, which the app's strict CSP does not block:
no inline script and no CSP bypass are needed.
"""
from __future__ import annotations

from playwright.sync_api import Page

FAILING_IMPACTS = {"serious", "critical"}

UNLABELLED_INPUTS = """() => Array.from(document.querySelectorAll('input, select, textarea'))
  .filter((el) => !['hidden', 'submit', 'button', 'reset'].includes(el.type))
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !el.getAttribute('aria-labelledby'))
  .map((el) => el.outerHTML.slice(0, 120))"""

HEADINGS = """() => Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6'))
  .filter((el) => el.getClientRects().length > 0)
  .map((el) => [Number(el.tagName[1]), el.textContent.trim()])"""

FOCUS_STYLE = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {tag: el.tagName, text: (el.textContent || el.id || '').trim().slice(0, 40),
          outline: style.outlineStyle, width: parseFloat(style.outlineWidth),
          visible: el.getClientRects().length > 0};
}"""


def audit(page: Page, name: str) -> None:
    """No serious or critical axe finding, a label on every input, headings in order."""
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    bad = [f"{v['id']} ({v['impact']}): {v['help']} at {node['target']}: {' '.join(node['failureSummary'].split())}"
           for v in result["violations"] if v["impact"] in FAILING_IMPACTS for node in v["nodes"][:3]]
    assert not bad, f"{name}: axe found\n  " + "\n  ".join(bad)

    unlabelled = page.evaluate(UNLABELLED_INPUTS)
    assert not unlabelled, f"{name}: inputs without a label: {unlabelled}"

    headings = page.evaluate(HEADINGS)
    levels = [level for level, _ in headings]
    assert levels and levels[0] == 1 and levels.count(1) == 1, f"{name}: one h1, first; got {headings}"
    for (before, _), (after, text) in zip(headings, headings[1:]):
        assert after <= before + 1, f"{name}: heading '{text}' (h{after}) skips a level after h{before}"


def assert_focus_visible(page: Page, name: str, stops: int = 6) -> None:
    """Tab from the top of a freshly loaded page: each control shows a clear focus ring."""
    for _ in range(stops):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUS_STYLE)
        if focused["tag"] == "BODY":
            break
        assert focused["visible"], f"{name}: focus went to a hidden element {focused}"
        assert focused["outline"] != "none" and focused["width"] >= 2, f"{name}: focus not visible on {focused}"


def icon_glyph(page: Page) -> str:
    """The payment state's icon shape (a tick, a cross...): colour is never the only signal."""
    return page.evaluate("() => getComputedStyle(document.querySelector('#payment-status [data-icon]'), '::after')"
                         ".content")

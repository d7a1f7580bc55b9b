"""The table: every figure in absolute numbers, its baseline, the ratio, and the goal."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def percentiles(values: list[float]) -> dict[int, float]:
    ordered = sorted(values)
    if not ordered:
        return {50: 0.0, 95: 0.0, 99: 0.0}

    def pick(p):
        return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]
    return {50: pick(50), 95: pick(95), 99: pick(99)}


def _fmt(value, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return " / ".join(_fmt(v, "") for v in value) + (f" {unit}" if unit else "")
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"
    return text + (f" {unit}" if unit and unit != "/s" else unit)


def _ratio(row) -> str:
    ours, base = row["lipia"], row["baseline"]
    if base is None or isinstance(ours, str):
        return "—"
    if isinstance(ours, tuple):
        return " / ".join(f"{o / b:.2f}" if b else "—" for o, b in zip(ours, base))
    return f"{ours / base:.2f}" if base else "—"


def _met(row) -> str:
    return "" if row["met"] is None else ("met" if row["met"] else "MISSED")


def table(rows: list[dict], context: dict) -> str:
    """A Markdown table: readable in a terminal and pasteable into docs/performance.md."""
    header = ["scenario", "metric", "Lipia", "baseline", "ratio", "goal", ""]
    body = [[r["scenario"], r["metric"], _fmt(r["lipia"], r["unit"]), _fmt(r["baseline"], r["unit"]), _ratio(r),
             r["goal"], _met(r)] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(b) for b in body]
    trips = ", ".join(f"{k} {v}" for k, v in context.get("round_trips", {}).items())
    notes = [
        "",
        "ratio = Lipia ÷ baseline (throughput: higher is better; latency and memory: lower is better).",
        f"Each load run {context.get('seconds')} s; web: {context.get('gunicorn')}; database: {context.get('database')}.",
        f"Database round trips per request (both apps): {trips}.",
        f"Money invariants after the run: {context.get('invariants', 'not checked')}.",
    ]
    return "\n".join(out + notes)


def save(out: Path, rows: list[dict], context: dict, raw: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table(rows, context) + "\n")
    (out / "results.json").write_text(json.dumps({"context": context, "rows": rows, "raw": raw}, indent=1,
                                                 default=str))


def profile_summary(path: Path, top: int = 15) -> str:
    """Where a sampled process spent its time, from py-spy's raw (collapsed) output.

    Inclusive time counts every function on a sample's stack once; the first list keeps
    only the project's own functions (what a fix can change), the second every frame.
    Self time is the innermost frame: for a web worker mostly the socket wait on MongoDB.
    """
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        total += n
        if frames:
            self_time[_short(frames[-1])] += n
        for name in {_short(f) for f in frames}:
            inclusive[name] += n
        for name in {_short(f) for f in frames if _is_own(f)}:
            own[name] += n
    if not total:
        return "profile: no samples"
    lines = [f"profile: {total} samples ({path})", "  the project's functions, inclusive:"]
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  every frame, inclusive:")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    lines.append("  self:")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in self_time.most_common(8)]
    return "\n".join(lines)


def _is_own(frame: str) -> bool:
    path = frame.partition(" (")[2]
    return path.startswith(("app/", "worker.py", "bench/"))


def _short(frame: str) -> str:
    """`handle (app/payments/callbacks.py:17)` -> `handle (app/payments/callbacks.py)`.

    py-spy already names files relative to their import root.
    """
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rstrip(')').rsplit(':', 1)[0]})"

"""Load: wrk for the most a server can do, a fixed-rate Python client for latency at a given rate.

Both send prepared requests (see prepare.py) and never run longer than asked.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .prepare import read_requests

LUA = Path(__file__).resolve().parent / "lua" / "requests.lua"
INSTALL_HINT = "wrk is needed: install it with 'sudo apt-get install wrk' (Debian/Ubuntu), then run again."


class WrkMissing(RuntimeError):
    pass


def wrk_path() -> str:
    path = shutil.which("wrk")
    if not path:
        raise WrkMissing(INSTALL_HINT)
    return path


@dataclass
class Result:
    """What one load run measured; latencies in milliseconds."""
    tool: str
    requests: int
    seconds: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    mean: float
    errors: int = 0
    codes: dict = field(default_factory=dict)
    sent: int = 0
    wrapped: int = 0
    rate: float | None = None  # the offered rate of a fixed-rate run

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def ok(self, *codes: int) -> int:
        return sum(n for code, n in self.codes.items() if int(code) in codes)

    def as_dict(self) -> dict:
        return {**self.__dict__, "rps": round(self.rps, 1)}


def run_wrk(url: str, requests_file: Path, *, seconds: float, connections: int, threads: int = 2,
            timeout_s: int = 10) -> Result:
    threads = max(1, min(threads, connections))
    argv = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", f"--timeout={timeout_s}s",
            "--latency", "-s", str(LUA), url]
    env = {**os.environ, "BENCH_REQUESTS": str(requests_file), "BENCH_THREADS": str(threads)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds + timeout_s + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"wrk did not finish within {seconds + timeout_s + 30:.0f}s")
    line = next((l for l in out.splitlines() if l.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out[-2000:]}")
    data = json.loads(line[len("BENCH_JSON "):])
    lat = {k: v / 1000.0 for k, v in data["latency_us"].items()}
    errors = data["errors"]
    return Result("wrk", data["requests"], data["duration_us"] / 1e6, lat["p50"], lat["p90"], lat["p95"], lat["p99"],
                  lat["max"], lat["mean"], errors=errors["connect"] + errors["read"] + errors["write"]
                  + errors["timeout"] + errors["status"], codes=data["codes"], sent=data["sent"],
                  wrapped=data["wrapped"])


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def run_paced(url: str, requests_file: Path, *, rate: float, seconds: float, offset: int = 0,
              clients: int = 32) -> Result:
    """Open-loop load at a fixed rate, like wrk2: request i is due at start + i/rate.

    Latency is counted from when a request was due, not when a free client sent it, so
    a server that falls behind shows its queueing delay instead of hiding it.
    """
    rows = read_requests(requests_file)[offset:]
    total = min(len(rows), int(rate * seconds))
    parts = urlsplit(url)
    latencies: list[float] = []
    codes: dict[str, int] = {}
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(total))
    start = time.perf_counter() + 0.2

    def client():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            method, target, body, headers = rows[i]
            try:
                conn.request(method, target, body=body or None, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                with lock:
                    errors[0] += 1
                continue
            elapsed = (time.perf_counter() - due) * 1000
            with lock:
                latencies.append(elapsed)
                codes[str(status)] = codes.get(str(status), 0) + 1
        conn.close()

    workers = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=seconds + 30)
    took = max(1e-9, time.perf_counter() - start)
    values = sorted(latencies)
    return Result("paced", len(values), took, _percentile(values, 50), _percentile(values, 90),
                  _percentile(values, 95), _percentile(values, 99), values[-1] if values else 0.0,
                  sum(values) / len(values) if values else 0.0, errors=errors[0], codes=codes, sent=total,
                  rate=rate)

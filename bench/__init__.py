"""Benchmarks: how fast Lipia serves, settles and spends, against a baseline in the same run.

`python -m bench` (or `make bench`) starts the real stack on loopback, loads it with
wrk for a bounded time per scenario, runs a minimal Flask app doing the same database
round trips under the same gunicorn settings, and prints every figure next to its
baseline. See docs/performance.md.
"""

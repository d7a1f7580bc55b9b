"""The real entry points (gunicorn, `flask` commands) start or stop with one clear message.

Each test runs the command as an operator would, in a subprocess, and reads its stderr:
one message, a non-zero status, no traceback, and no "Exception ignored" at exit.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.support.procs import BIN, ROOT, free_port

PRODUCTION = {"LIPIA_ENV": "production", "SECRET_KEY": "p" * 40, "PUBLIC_BASE_URL": "https://lipia.example.com",
              "MPESA_BASE_URL": "https://api.safaricom.co.ke", "MPESA_CONSUMER_KEY": "real-key",
              "MPESA_CONSUMER_SECRET": "real-secret", "MPESA_SHORTCODE": "600100", "MPESA_PASSKEY": "real-passkey"}


def bare_env(**values) -> dict:
    """Only what a fresh container has, plus `values`: no LIPIA_ENV unless given."""
    return {"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONUNBUFFERED": "1", **values}


def closed_mongo_uri() -> str:
    return f"mongodb://127.0.0.1:{free_port()}/lipia_startup"


def run(argv, env, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def flask(*args, env) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "flask", "--app", "wsgi", *args], env)


def gunicorn_argv(port: int) -> list[str]:
    return [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "wsgi:app"]


def assert_clean(output: str) -> None:
    assert "Traceback" not in output, output
    assert "Exception ignored" not in output, output


# ---------------------------------------------------------------- gunicorn

@pytest.mark.parametrize("env, expected", [
    (bare_env(), "LIPIA_ENV is not set, so Lipia runs as production"),
    (bare_env(LIPIA_ENV="test", MONGO_URI="mongodb://127.0.0.1:99999/lipia"), "MONGO_URI='mongodb://127.0.0.1:99999"),
    (bare_env(**{**PRODUCTION, "MONGO_URI": "mongodb://db.example.com/lipia", "MPESA_SHORTCODE": "174379"}),
     "MPESA_SHORTCODE is the public sandbox shortcode 174379"),
])
def test_gunicorn_stops_on_a_bad_setting_with_one_message(env, expected):
    result = run(gunicorn_argv(free_port()), {**env, "WEB_CONCURRENCY": "2"})
    assert result.returncode == 3
    assert result.stderr.count("Lipia cannot start") == 1, result.stderr
    assert expected in result.stderr
    assert "Booting worker" not in result.stderr  # refused in the master, before any fork
    assert_clean(result.stderr)


def test_gunicorn_serves_without_a_version_warns_once_and_stops_cleanly():
    port = free_port()
    env = bare_env(**{**PRODUCTION, "MPESA_BASE_URL": "http://127.0.0.1:8001"}, MONGO_URI=closed_mongo_uri(),
                   MPESA_ENVIRONMENT="sandbox", WEB_CONCURRENCY="2", WEB_GRACEFUL_TIMEOUT="3")
    proc = subprocess.Popen(gunicorn_argv(port), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
                break
            except (requests.ConnectionError, requests.Timeout):
                assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        assert reply.status_code == 200
        assert reply.headers.get("Server") == "gunicorn"  # no version for a scanner to match
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert output.count("warning: MPESA_ENVIRONMENT=sandbox") == 1, output
    assert_clean(output)


# ---------------------------------------------------------------- flask commands

# Each waits for pymongo's server selection (5 s), so two commands stand for all of them.
@pytest.mark.parametrize("command", [["init-db"], ["repair-ledger"]])
def test_a_flask_command_against_an_unreachable_database_says_so_in_one_line(command):
    result = flask(*command, env=bare_env(LIPIA_ENV="test", MONGO_URI=closed_mongo_uri()))
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the database at 127.0.0.1:"), result.stderr
    assert "did not answer" in lines[0] and "Topology" not in lines[0]
    assert_clean(result.stderr)


def test_a_flask_command_with_a_bad_setting_says_so_once():
    result = flask("init-db", env=bare_env(LIPIA_ENV="test", MONGO_URI="mongodb://127.0.0.1:99999/lipia"))
    assert result.returncode == 3
    assert result.stderr.count("Lipia cannot start") == 1 and "MONGO_URI=" in result.stderr
    assert_clean(result.stderr)


def test_flask_commands_end_without_an_exit_traceback():
    # The rate limiter's MongoDB storage is created with the app but never used by a command.
    result = flask("routes", env=bare_env(LIPIA_ENV="test", MONGO_URI=closed_mongo_uri()))
    assert result.returncode == 0 and "/healthz" in result.stdout
    assert_clean(result.stderr)


def test_gunicorns_graceful_timeout_comes_from_the_setting():
    env = bare_env(LIPIA_ENV="test", MONGO_URI=closed_mongo_uri(), WEB_GRACEFUL_TIMEOUT="7")
    result = run([*gunicorn_argv(free_port())[:-1], "--print-config", "wsgi:app"], env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^graceful_timeout\s*=\s*7$", result.stdout, re.M), result.stdout

"""The Railway recipe: two services from one repository, each with its own config file."""
import json
import runpy
import shlex
import sys
from pathlib import Path

from app.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _config(name: str) -> dict:
    return json.loads((ROOT / name).read_text())["deploy"]


def _procfile() -> dict:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_python_version_is_pinned_to_the_one_the_tests_run():
    pinned = (ROOT / ".python-version").read_text().strip()
    assert len(pinned.split(".")) == 3, "pin a full version (x.y.z) so every deploy builds the same Python"
    assert pinned.split(".")[:2] == [str(sys.version_info.major), str(sys.version_info.minor)]


def test_web_service_starts_gunicorn_and_is_checked_on_healthz(client):
    web = _config("railway.json")
    assert web["startCommand"] == _procfile()["web"]
    assert web["healthcheckPath"] == "/healthz"
    assert client.get(web["healthcheckPath"]).status_code == 200


def test_worker_service_has_its_own_file_and_runs_the_worker():
    worker = _config("railway.worker.json")
    assert worker["startCommand"] == _procfile()["worker"] == "python worker.py"
    assert "healthcheckPath" not in worker  # no HTTP server: a health check would never pass
    assert worker["restartPolicyType"] == "ALWAYS"


def test_draining_times_are_numbers_that_cover_what_each_process_holds():
    web, worker = _config("railway.json"), _config("railway.worker.json")
    # Railway refuses a quoted number here, and the deploy fails before it starts.
    assert type(web["drainingSeconds"]) is int and type(worker["drainingSeconds"]) is int
    gunicorn_settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert web["drainingSeconds"] > gunicorn_settings["graceful_timeout"]
    defaults = load_config({"LIPIA_ENV": "development"})
    # The worker may be holding one STK push (connect + read timeout) when SIGTERM comes,
    # and gives it back within its shutdown bound, when it has one.
    push = defaults["MPESA_CONNECT_TIMEOUT"] + defaults["MPESA_READ_TIMEOUT"]
    assert worker["drainingSeconds"] > max(push, defaults.get("WORKER_SHUTDOWN_SECONDS") or 0)


def test_both_services_prepare_the_database_with_real_commands(app):
    for name in ("railway.json", "railway.worker.json"):
        assert _config(name)["preDeployCommand"] == ["sh scripts/predeploy.sh"]
    script = (ROOT / "scripts/predeploy.sh").read_text()
    commands = [shlex.split(line) for line in script.splitlines() if line.startswith("flask ")]
    assert [c[-1] for c in commands] == ["init-db", "seed-plans"]
    assert all(c[:3] == ["flask", "--app", "wsgi"] for c in commands)
    assert {"init-db", "seed-plans"} <= set(app.cli.list_commands(None))
    assert "set -e" in script  # a failed step stops the deploy

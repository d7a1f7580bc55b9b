"""The Daraja simulator never runs beside production, and its handset answers this machine only."""
import re
import subprocess
import sys

import pytest
import requests

from simulator import create_app
from simulator.config import Refused, Settings, check_environment
from tests.support.simulator_harness import SimulatorProcess
from tests.support.procs import ROOT

PHONE = "254712345678"
STRANGER = {"REMOTE_ADDR": "203.0.113.9"}


@pytest.mark.parametrize("env", [{}, {"LIPIA_ENV": ""}, {"LIPIA_ENV": "production"}, {"LIPIA_ENV": "staging"}])
def test_the_simulator_refuses_production_and_an_unset_environment(env):
    with pytest.raises(Refused):
        check_environment(env)


@pytest.mark.parametrize("name", ["development", "test"])
def test_the_simulator_runs_in_development_and_test(name):
    check_environment({"LIPIA_ENV": name})


@pytest.mark.parametrize("env", [{"LIPIA_ENV": "production"}, {}])
def test_python_m_simulator_stops_with_one_message(env):
    result = subprocess.run([sys.executable, "-m", "simulator"], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, env={"PATH": "/usr/bin:/bin", "SIMULATOR_PORT": "1", **env})
    assert result.returncode == 3
    assert result.stderr.count("The Daraja simulator refuses to start") == 1
    assert "Traceback" not in result.stderr


def handset_calls(client, environ):
    return [
        client.get("/handset", environ_base=environ),
        client.get(f"/handset/api/prompt?phone={PHONE}", environ_base=environ),
        client.post("/handset/api/ws_CO_123/pin", json={"pin": "1234"}, environ_base=environ),
        client.post("/handset/api/ws_CO_123/cancel", environ_base=environ),
        client.post("/handset/api/ws_CO_123/timeout", environ_base=environ),
    ]


def test_the_handset_refuses_other_machines():
    client = create_app(Settings()).test_client()
    for reply in handset_calls(client, STRANGER):
        assert reply.status_code == 403 and reply.json["error"] == "forbidden"
    # Daraja's own API still answers callers from elsewhere (the worker may run on another host).
    assert client.get("/healthz", environ_base=STRANGER).status_code == 200


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_the_handset_answers_this_machine(address):
    client = create_app(Settings()).test_client()
    replies = handset_calls(client, {"REMOTE_ADDR": address})
    assert [r.status_code for r in replies] == [200, 200, 404, 404, 404]  # no such prompt, but not refused


def test_a_shared_demo_opens_the_handset_on_purpose():
    settings = Settings.from_env({"SIMULATOR_HANDSET_OPEN": "true"})
    assert settings.handset_open
    replies = handset_calls(create_app(settings).test_client(), STRANGER)
    assert [r.status_code for r in replies] == [200, 200, 404, 404, 404]
    with pytest.raises(ValueError):
        Settings.from_env({"SIMULATOR_HANDSET_OPEN": "maybe"})


def test_the_server_header_names_no_version():
    with SimulatorProcess(env={"LIPIA_ENV": "test"}) as sim:
        server = requests.get(sim.url + "/healthz", timeout=5).headers["Server"]
    assert server == "daraja-simulator"
    assert not re.search(r"\d", server)

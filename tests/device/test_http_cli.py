"""``edgeclass run --http`` as a user runs it: refusals in one line, the token never in the logs, one status."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from .cli_helpers import _MAIN, edgeclass
from .http_helpers import colour_cycle_video, free_port, request, wait_for

TOKEN = "f0e1d2c3b4a5968778695a4b3c2d1e0f"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return colour_cycle_video(tmp_path_factory.mktemp("http-cli") / "cycle.avi")


def _start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _MAIN, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, **kwargs)


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    return out, err


def test_non_loopback_without_token_is_refused_in_one_line(colour_bundle, video):
    result = edgeclass("run", "--bundle", colour_bundle, "--source", video, "--http", "0.0.0.0:18765", "--max-frames", "5")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: [http] listen 0.0.0.0:18765: reachable from other machines")
    assert "token_file" in lines[-1] and "Traceback" not in result.stderr
    assert result.stdout == ""  # refused before a single frame was classified


def test_bad_token_file_and_busy_port_are_one_line_errors(colour_bundle, video, tmp_path):
    short = tmp_path / "token"
    short.write_text("tiny\n")
    result = edgeclass("run", "--bundle", colour_bundle, "--source", video, "--http", "0.0.0.0:18766",
                       "--http-token-file", short, "--max-frames", "5")
    assert result.returncode == 2 and f"error: {short}: the token must be one word" in result.stderr
    assert "tiny" not in result.stderr  # not even a bad token is printed
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = edgeclass("run", "--bundle", colour_bundle, "--source", video, "--http", f"127.0.0.1:{port}",
                           "--max-frames", "5")
    assert result.returncode == 2 and f"error: [http] listen 127.0.0.1:{port}: cannot listen there" in result.stderr
    assert "Traceback" not in result.stderr


def test_all_interfaces_with_a_token_and_the_token_never_logged(colour_bundle, video, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    proc = _start("-v", "run", "--bundle", colour_bundle, "--source", video, "--loop", "--realtime",
                  "--http", f"0.0.0.0:{port}", "--http-token-file", token_file)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url + "/healthz"), timeout=30)
        assert request(url + "/api/status").status == 401
        assert request(url + "/api/status?token=wrong" + TOKEN).status == 401
        assert request(url + "/?token=" + TOKEN).status == 200
        assert request(url + "/api/latest", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
        assert request(url + "/metrics?token=" + TOKEN).status == 200
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert "GET /api/status" in err  # the request log is there (-v), without query strings
    assert TOKEN not in err and TOKEN not in out


def _answers(url: str) -> bool:
    try:
        return request(url, timeout=2).status in (200, 503)
    except OSError:
        return False


def test_api_status_is_what_the_state_file_says(colour_bundle, video, tmp_path):
    state_file = tmp_path / "state.json"
    config = tmp_path / "device.toml"
    port = free_port()
    config.write_text(f'[model]\nbundle = "{colour_bundle}"\n[source]\nsource = "{video}"\nloop = true\nrealtime = true\n'
                      f'[service]\nstate_file = "{state_file}"\nstate_interval = 0.2\n[http]\nlisten = "127.0.0.1:{port}"\n')
    proc = _start("run", "--config", config, env={**os.environ, "NOTIFY_SOCKET": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: state_file.exists() and json.loads(state_file.read_text())["frames"] > 10, timeout=30)
        status = request(url + "/api/status").json()
        state = json.loads(state_file.read_text())
        assert set(status) == set(state) - {"updated_at"}  # one builder; write_state adds the time it wrote
        assert status["pid"] == state["pid"] == proc.pid and status["bundle_path"] == state["bundle_path"]
        assert status["label"] in ("red", "green", "blue") and status["resolution"] == "160x120"
        assert request(url + "/healthz").status == 200  # the supervisor's liveness says healthy
    finally:
        _stop(proc)


def test_config_file_refuses_a_bad_listen_with_its_line(colour_bundle, video, tmp_path):
    config = tmp_path / "device.toml"
    config.write_text(f'[model]\nbundle = "{colour_bundle}"\n[source]\nsource = "{video}"\n[http]\nlisten = "localhost"\n')
    result = edgeclass("run", "--config", config, "--max-frames", "3")
    assert result.returncode == 2
    assert f"error: {config}:6: [http] listen = \"localhost\" must be \"HOST:PORT\"" in result.stderr

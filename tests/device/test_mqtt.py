"""MQTT with Home Assistant discovery, against a real mosquitto on 127.0.0.1 and a real paho subscriber.

Every test runs the real pipeline (the tiny colour model in the real
interpreter, real video files) and a real broker that the tests stop, kill,
freeze and restart. Frame rates are compared as ratios of equal windows in
one run, never against an absolute time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jinja2
import pytest

from edgeclass.device.bundle import load_bundle
from edgeclass.device.outputs.factory import build_outputs
from edgeclass.device.outputs.mqtt import MqttOutput
from edgeclass.device.pipeline.classifier import EdgeTPU, open_classifier
from edgeclass.device.pipeline.loop import Output, RunLimits, Runner
from edgeclass.device.service.config import DeviceConfig, build, resolve

from .conftest import colour_frame, write_video
from .http_helpers import request, serving
from .mqtt_fixtures import Mosquitto, Subscriber, broker, tls_files  # noqa: F401  (fixtures)

PREFIX = "test/cam"
HA_TOPIC = re.compile(r"^homeassistant/(sensor|binary_sensor)/([a-zA-Z0-9_-]+)/([a-zA-Z0-9_-]+)/config$")


def _video(path: Path, phases: list[tuple[str, int]]) -> Path:
    return write_video(path, [colour_frame(name, seed=i) for name, n in phases for i in range(n)])


class Run:
    """``edgeclass run ARGS`` as a child process, its output in files."""

    def __init__(self, workdir: Path, *args, verbose: bool = False) -> None:
        self.out, self.err = workdir / "stdout.txt", workdir / "stderr.txt"
        command = [sys.executable, "-m", "edgeclass.device.cli", *(["--verbose"] if verbose else []), "run"]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([*command, *map(str, args)],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.err.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _wait(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _latest(sub: Subscriber, topic: str):
    messages = sub.on(topic)
    return messages[-1] if messages else None


def _render(template: str, payload: bytes) -> str:
    """A discovery template as Home Assistant renders it: Jinja2 with ``value_json`` set to the payload."""
    return jinja2.Environment().from_string(template).render(value_json=json.loads(payload), value=payload.decode())


# ----------------------------------------------------------------------------- retained topics, discovery


def test_state_availability_and_discovery_are_retained_for_late_subscribers(broker, colour_bundle, tmp_path):
    video = _video(tmp_path / "red-green.avi", [("red", 45), ("green", 45)])
    live = Subscriber(broker.port)
    run = Run(tmp_path, "--bundle", colour_bundle, "--source", video, "--realtime", "--fps", "30",
              "--mqtt", broker.url, "--mqtt-topic", PREFIX, "--heartbeat", "0.4", "--stats", "1")
    try:
        live.wait_for(lambda s: _latest(s, f"{PREFIX}/state"), what="the first state")
        # A subscriber that arrives after the fact gets the current state and "online" at once (retained).
        late = Subscriber(broker.port, [f"{PREFIX}/#"])
        late.wait_for(lambda s: {f"{PREFIX}/state", f"{PREFIX}/availability"} <= s.topics(), timeout=5,
                      what="retained state and availability")
        assert all(m.retain for m in late.on(f"{PREFIX}/state")[:1] + late.on(f"{PREFIX}/availability")[:1])
        assert late.on(f"{PREFIX}/availability")[0].text == "online"
        late.close()
        assert run.wait() == 0, run.stderr()
    finally:
        run.kill()
    live.close()

    states = [m.json() for m in live.on(f"{PREFIX}/state")]
    assert [s["label"] for s in states if s["event"] == "change"] == ["red", "green"]
    assert {"label", "score", "top_k", "time"} <= set(states[0]) and states[0]["top_k"][0]["label"] == "red"
    heartbeats = [s for s in states if s["event"] == "heartbeat"]
    assert heartbeats and len(states) < 90 / 4, "state is sent on changes and heartbeats, not every frame"
    assert {h["label"] for h in heartbeats} == {"red", "green"}

    # After a clean exit: everything still there for a newcomer, and availability says offline.
    after = Subscriber(broker.port)
    after.wait_for(lambda s: len([t for t in s.topics() if t.startswith("homeassistant/")]) >= 7
                   and f"{PREFIX}/diagnostics" in s.topics() and f"{PREFIX}/availability" in s.topics(),
                   timeout=5, what="retained discovery, diagnostics and availability")
    after.close()
    assert _latest(after, f"{PREFIX}/availability").text == "offline"
    state = _latest(after, f"{PREFIX}/state")
    diagnostics = _latest(after, f"{PREFIX}/diagnostics")
    assert state.retain and state.json()["label"] == "green"
    diag = diagnostics.json()
    assert diagnostics.retain and diag["fps"] > 0 and diag["backend"] == "cpu" and diag["interpreter"] and diag["bundle"] == "bundle"
    assert {"latency_ms_p95", "uncertain_rate", "mean_top_score", "confidence_dropped"} <= set(diag)

    configs = {m.topic: m for m in after.messages if m.topic.startswith("homeassistant/")}
    assert all(m.retain for m in configs.values())
    parsed = {}
    for topic, message in configs.items():
        match = HA_TOPIC.match(topic)
        assert match, f"{topic} does not follow <prefix>/<component>/<node_id>/<object_id>/config"
        parsed[match.group(3)] = (match.group(1), message.json())
    assert {"label", "fps", "confidence"} <= set(parsed)
    devices = {json.dumps(config["device"], sort_keys=True) for _, config in parsed.values()}
    assert len(devices) == 1, "every entity belongs to one Home Assistant device"
    device = parsed["label"][1]["device"]
    assert device["identifiers"] == ["test_cam"] and device["name"] and device["model"] and device["sw_version"]
    assert len({config["unique_id"] for _, config in parsed.values()}) == len(parsed)
    for component, config in parsed.values():
        assert config["availability_topic"] == f"{PREFIX}/availability"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        assert config["origin"]["name"] == "edgeclass"

    # The templates, rendered as Home Assistant renders them, on the payloads really published.
    label = parsed["label"][1]
    assert parsed["label"][0] == "sensor" and label["state_topic"] == label["json_attributes_topic"] == f"{PREFIX}/state"
    assert _render(label["value_template"], state.payload) == "green"
    attributes = json.loads(_render(label["json_attributes_template"], state.payload))
    assert attributes["score"] == state.json()["score"] and attributes["top_k"][0]["label"] == "green"
    for name in ("fps", "confidence"):
        component, config = parsed[name]
        assert config["entity_category"] == "diagnostic" and config["state_topic"] == f"{PREFIX}/diagnostics"
    assert float(_render(parsed["fps"][1]["value_template"], diagnostics.payload)) == diag["fps"]
    assert float(_render(parsed["confidence"][1]["value_template"], diagnostics.payload)) == \
        round(diag["mean_top_score"] * 100, 1)
    assert _render(parsed["confidence_dropped"][1]["value_template"], diagnostics.payload) == "OFF"


def test_last_will_says_offline_after_kill_9(broker, colour_bundle, tmp_path):
    video = _video(tmp_path / "red.avi", [("red", 30)])
    sub = Subscriber(broker.port, [f"{PREFIX}/availability"])
    run = Run(tmp_path, "--bundle", colour_bundle, "--source", video, "--loop", "--realtime",
              "--mqtt", broker.url, "--mqtt-topic", PREFIX)
    try:
        sub.wait_for(lambda s: [m for m in s.on(f"{PREFIX}/availability") if m.text == "online"], what="online")
        killed_at = time.time()
        run.proc.send_signal(signal.SIGKILL)
        run.wait(10)
        offline = sub.wait_for(lambda s: [m for m in s.on(f"{PREFIX}/availability") if m.text == "offline"],
                               timeout=10, what="the Last Will")
    finally:
        run.kill()
    sub.close()
    assert offline[0].at - killed_at < 5, "the broker publishes the will as soon as the connection drops"
    # It is the broker's Last Will: the connection dropped without a goodbye (mosquitto logs a clean
    # DISCONNECT as "disconnected."), and it is retained.
    client_id = re.search(r"mqtt: connected to \S+ as (\S+)", run.stderr()).group(1)
    assert f"Client {client_id} closed its connection." in broker.log_text()
    assert f"Client {client_id} disconnected." not in broker.log_text()
    late = Subscriber(broker.port, [f"{PREFIX}/availability"])
    assert late.wait_for(lambda s: s.on(f"{PREFIX}/availability"), timeout=5, what="retained will")[-1].text == "offline"
    late.close()


# ----------------------------------------------------------------------------- the broker goes away


def _records(results: Path) -> list[dict]:
    records = []
    for line in (results.read_text() if results.exists() else "").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return records


def _labels(results: Path) -> list[str]:
    return [r["label"] for r in _records(results)]


def _frames_between(results: Path, start: float, end: float) -> int:
    return sum(start <= r["ts"] < end for r in _records(results))


def test_broker_stopped_mid_run_keeps_the_frame_rate_and_the_latest_state_arrives_after_restart(
        broker, colour_bundle, tmp_path):
    # Red for 6 s, then blue for 8 s at 50 fps; the change to blue happens while the broker is down.
    video = _video(tmp_path / "red-blue.avi", [("red", 300), ("blue", 400)])
    results = tmp_path / "results.jsonl"
    sub = Subscriber(broker.port, [f"{PREFIX}/#"])
    run = Run(tmp_path, "--bundle", colour_bundle, "--source", video, "--realtime", "--fps", "50",
              "--mqtt", broker.url, "--mqtt-topic", PREFIX, "--heartbeat", "3600",
              "--format", "jsonl", "--emit", "all", "--output", results)
    window = 1.5
    try:
        sub.wait_for(lambda s: _latest(s, f"{PREFIX}/state"), what="the first state")
        sub.wait_for(lambda s: _frames_between(results, 0, time.time()) >= 100, what="100 frames")
        stopped_at = time.time()
        broker.stop()
        sub.close()
        # Blue starts while the broker is down; wait past it.
        _wait(lambda: _labels(results)[-1:] == ["blue"], what="the first blue frame")
        time.sleep(0.5)
        restarted_at = time.time()
        broker.start()  # an empty broker: no retained messages survive
        after = Subscriber(broker.port, ["#"])
        state = after.wait_for(lambda s: [m for m in s.on(f"{PREFIX}/state") if m.json()["label"] == "blue"],
                               timeout=40, what="the latest state after the restart")[-1]
        after.wait_for(lambda s: len([t for t in s.topics() if t.startswith("homeassistant/")]) >= 7
                       and [m for m in s.on(f"{PREFIX}/availability") if m.text == "online"],
                       timeout=5, what="discovery and availability again")
        after.close()
        assert run.wait() == 0, run.stderr()
    finally:
        run.kill()
    # The blue state was decided during the outage and delivered on reconnection (heartbeat is an hour).
    decided = state.json()["ts"]
    assert stopped_at < decided < restarted_at
    up = _frames_between(results, stopped_at - window, stopped_at)
    down = _frames_between(results, stopped_at + 0.5, stopped_at + 0.5 + window)
    print(f"frames in {window} s: broker up {up}, broker down {down}, ratio {down / up:.3f}")
    assert up > 0.6 * 50 * window, "the run was starved of CPU: the comparison would mean nothing"
    assert down / up >= 0.9
    err = run.stderr()
    assert "lost the connection" in err and err.count("mqtt: connected to") == 2 and "Traceback" not in err


class FrameTimes(Output):
    """Records when the loop handed over each frame (monotonic clock)."""

    name = "frame-times"

    def __init__(self) -> None:
        self.times: list[float] = []

    def write(self, frame, decision) -> None:
        self.times.append(time.monotonic())

    def between(self, start: float, end: float) -> int:
        return sum(start <= t < end for t in self.times)


def test_a_broker_down_at_start_gone_or_frozen_never_slows_the_loop(colour_bundle, tmp_path):
    """One run of a camera-like source at 100 fps through four phases of the broker.

    Down at start (connections refused), up, frozen (SIGSTOP: the TCP
    connection stays open, nothing is read or acknowledged: a hung or very
    slow broker), stopped (gone mid-run). Each phase's frame count over the
    same window is compared with the "up" window's: an output that waited for
    the network for more than the 10 ms between frames would lose frames (the
    source keeps only the newest).
    """
    broker = Mosquitto(tmp_path)
    broker.stop()  # its port is known and nothing listens there yet
    video = _video(tmp_path / "rgb.avi", [(name, 10) for name in ("red", "green", "blue")])
    config = build(resolve(DeviceConfig().to_dict(), {
        "source": {"source": str(video), "loop": True, "realtime": True, "fps": 100.0},
        "decision": {"heartbeat": 3600.0},
        "output": {"stats_interval": 0.5},
        "mqtt": {"url": broker.url, "topic": PREFIX, "results_per_second": 20.0},
    }))
    outputs = build_outputs(config)
    assert list(outputs) == ["stream", "mqtt"]
    mqtt: MqttOutput = outputs["mqtt"]
    frames = FrameTimes()
    bundle = load_bundle(colour_bundle)
    runner = Runner(bundle, open_classifier(bundle, edgetpu=EdgeTPU.OFF), config.source, config.decision,
                    outputs=[mqtt, frames], limits=RunLimits(duration=120))
    thread = threading.Thread(target=runner.run, daemon=True)
    window, settle = 2.0, 0.3
    windows: dict[str, float] = {}

    def phase(name: str) -> None:
        windows[name] = time.monotonic() + settle
        time.sleep(settle + window)

    def fresh_state(sub: Subscriber, since: float) -> list:
        return sub.wait_for(lambda s: [m for m in s.on(f"{PREFIX}/state") if m.json()["ts"] > since], timeout=40,
                            what="a state decided after the broker came back")

    thread.start()
    sub = None
    try:
        _wait(lambda: frames.times, what="the first frame")
        phase("down at start")
        assert not mqtt.stats()["connected"]
        broker.start()
        _wait(lambda: mqtt.connected and mqtt.stats()["connected"], timeout=40, what="the connection")
        sub = Subscriber(broker.port, [f"{PREFIX}/#"])
        sub.wait_for(lambda s: len(s.on(f"{PREFIX}/result")) >= 10 and s.on(f"{PREFIX}/diagnostics"),
                     what="results and diagnostics")
        assert not any(m.retain for m in sub.on(f"{PREFIX}/result"))
        phase("up")
        before_freeze = mqtt.stats()
        broker.freeze()
        phase("frozen")
        frozen = mqtt.stats()
        broker.thaw()
        thawed_at = time.time()
        fresh_state(sub, thawed_at)
        results = sub.on(f"{PREFIX}/result")
        sub.close()
        stopped_at = time.time()
        broker.stop()
        phase("stopped")
        broker.start()
        sub = Subscriber(broker.port, [f"{PREFIX}/#"])
        fresh_state(sub, stopped_at)
        assert sub.wait_for(lambda s: s.on(f"{PREFIX}/availability"), what="availability")[-1].text == "online"
        final = mqtt.stats()
    finally:
        runner.stop()
        thread.join(20)
        mqtt.close()
        if sub is not None:
            sub.close()
        broker.stop()
    counts = {name: frames.between(start, start + window) for name, start in windows.items()}
    ratios = {name: round(n / counts["up"], 3) for name, n in counts.items()}
    print(f"frames in {window} s windows: {counts}; ratio to up: {ratios}; mqtt when frozen {frozen}, at the end {final}")
    assert counts["up"] > 0.7 * 100 * window, "the loop was starved of CPU: the comparison would mean nothing"
    assert min(ratios.values()) >= 0.85
    # Results queued while nothing could be sent were dropped, oldest first, and counted: before the first
    # connection, and while frozen (~20 a second, nothing acknowledged, 10 in flight at most).
    assert before_freeze["dropped"] > 0 and frozen["dropped"] > before_freeze["dropped"]
    assert frozen["connected"] and frozen["queued"] <= 16
    assert final["connected"] and final["connections"] == 2 and final["published"] > frozen["published"]
    # Rate-limited to 20 a second while the broker answered.
    span = results[-1].json()["ts"] - results[0].json()["ts"]
    assert len(results) <= 20 * span + 2


def test_metrics_say_mqtt_connected_while_the_broker_is_up_and_0_once_it_stops(broker, colour_bundle, tmp_path):
    """``/metrics`` of the live page's HTTP output beside the real MQTT output and a real mosquitto."""
    from prometheus_client.parser import text_string_to_metric_families

    def connected(url: str) -> float:
        families = {f.name: f for f in text_string_to_metric_families(request(url + "/metrics").text)}
        return families["edgeclass_mqtt_connected"].samples[0].value

    video = _video(tmp_path / "rgb.avi", [(name, 10) for name in ("red", "green", "blue")])
    config = build(resolve(DeviceConfig().to_dict(), {"mqtt": {"url": broker.url, "topic": PREFIX}}))
    mqtt: MqttOutput = build_outputs(config)["mqtt"]
    sub = None
    try:
        with serving(video, colour_bundle, outputs=[mqtt]) as s:
            _wait(lambda: connected(s.url) == 1, what="edgeclass_mqtt_connected 1")
            # The broker agrees: the session it holds announced itself.
            sub = Subscriber(broker.port, [f"{PREFIX}/availability"])
            assert sub.wait_for(lambda m: m.on(f"{PREFIX}/availability"), what="availability")[-1].text == "online"
            sub.close()
            sub = None
            broker.stop()
            _wait(lambda: connected(s.url) == 0, what="edgeclass_mqtt_connected 0 after the broker stopped")
            broker.start()
            _wait(lambda: connected(s.url) == 1, timeout=40, what="edgeclass_mqtt_connected 1 after a reconnect")
    finally:
        mqtt.close()
        if sub is not None:
            sub.close()


# ----------------------------------------------------------------------------- TLS, credentials


PASSWORD = "pw-" + os.urandom(8).hex()


def _service_config(path: Path, bundle: Path, video: Path, mqtt: dict, **extra) -> Path:
    lines = [f'[model]\nbundle = "{bundle}"', f'[source]\nsource = "{video}"\nrealtime = true\nloop = true',
             f'[service]\nstate_file = "{path.parent / "state.json"}"\nstate_interval = 0.5',
             f'[output]\npath = "{path.parent / "results.jsonl"}"']
    lines.append("[mqtt]\n" + "\n".join(f"{k} = {json.dumps(str(v) if isinstance(v, Path) else v)}"
                                        for k, v in mqtt.items()))
    for section, values in extra.items():
        lines.append(f"[{section}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()))
    path.write_text("\n\n".join(lines) + "\n")
    return path


def _everything_written(workdir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in workdir.iterdir()
                     if p.is_file() and p.suffix in (".txt", ".json", ".jsonl", ".toml"))


def test_tls_with_the_throwaway_ca_a_client_certificate_and_a_password(tls_files, colour_bundle, tmp_path):
    tls = tls_files
    secure = Mosquitto(tmp_path, tls=tls, require_certificate=True, users={"edge": PASSWORD})
    try:
        password_file = tmp_path / "mqtt.password"
        password_file.write_text(PASSWORD + "\n")
        password_file.chmod(0o600)
        video = _video(tmp_path / "red.avi", [("red", 30)])
        config = _service_config(tmp_path / "device.toml", colour_bundle, video, {
            "url": secure.url, "topic": PREFIX, "ca_file": tls.ca, "cert_file": tls.client_cert,
            "key_file": tls.client_key, "username": "edge", "password_file": password_file})
        sub = Subscriber(secure.port, [f"{PREFIX}/#"], ca=tls.ca, cert=tls.client_cert, key=tls.client_key,
                         username="edge", password=PASSWORD)
        run = Run(tmp_path, "--config", config, "--duration", "3", verbose=True)
        try:
            state = sub.wait_for(lambda s: _latest(s, f"{PREFIX}/state"), what="state over TLS")
            assert run.wait() == 0, run.stderr()
        finally:
            run.kill()
        sub.close()
        assert state.json()["label"] == "red"
        assert f"mqtt: connected to {secure.url}" in run.stderr()
        assert PASSWORD not in _everything_written(tmp_path)
    finally:
        secure.stop()


@pytest.mark.parametrize("fault", ["wrong-ca", "wrong-password"])
def test_refused_connections_are_logged_once_and_classifying_goes_on(tls_files, colour_bundle, tmp_path, fault):
    tls = tls_files
    secure = Mosquitto(tmp_path, tls=tls, users={"edge": PASSWORD})
    try:
        password_file = tmp_path / "mqtt.password"
        password_file.write_text(("not-" + PASSWORD) if fault == "wrong-password" else PASSWORD)
        password_file.chmod(0o600)
        video = _video(tmp_path / "red.avi", [("red", 30)])
        config = _service_config(tmp_path / "device.toml", colour_bundle, video, {
            "url": secure.url, "topic": PREFIX, "ca_file": tls.other_ca if fault == "wrong-ca" else tls.ca,
            "username": "edge", "password_file": password_file})
        run = Run(tmp_path, "--config", config, "--duration", "4", verbose=True)
        assert run.wait() == 0, run.stderr()
        err = run.stderr()
        expected = ("the broker's TLS certificate is not trusted" if fault == "wrong-ca"
                    else "refused the connection: Not authorized (check [mqtt] username and password_file)")
        warnings = [line for line in err.splitlines() if line.startswith("WARNING") and "mqtt" in line]
        assert len(warnings) == 1 and expected in warnings[0], err
        assert err.count("mqtt: ") >= 3, "the retries are still logged, at debug level"
        assert "mqtt: connected" not in err and "Traceback" not in err
        assert json.loads((tmp_path / "state.json").read_text())["frames"] > 30
        assert PASSWORD not in _everything_written(tmp_path) + secure.log_text()
    finally:
        secure.stop()


# ----------------------------------------------------------------------------- reload


def test_sighup_applies_changed_mqtt_settings(broker, colour_bundle, tmp_path):
    video = _video(tmp_path / "red.avi", [("red", 30)])
    config = tmp_path / "device.toml"
    _service_config(config, colour_bundle, video, {"url": broker.url, "topic": "test/one"})
    sub = Subscriber(broker.port, ["test/#"])
    run = Run(tmp_path, "--config", config)
    try:
        _reload_steps(run, sub, broker, lambda mqtt: _service_config(config, colour_bundle, video, mqtt), tmp_path)
    except AssertionError as exc:  # with what the service and the broker said
        raise AssertionError(f"{exc}\n--- edgeclass:\n{run.stderr()[-3000:]}\n--- mosquitto:\n"
                             f"{broker.log_text()[-3000:]}") from None
    finally:
        run.kill()
    sub.wait_for(lambda s: _latest(s, "test/two/availability").text == "offline", timeout=5, what="offline on exit")
    sub.close()


def _reload_steps(run: Run, sub: Subscriber, broker: Mosquitto, configure, tmp_path: Path) -> None:
    sub.wait_for(lambda s: _latest(s, "test/one/state") and _latest(s, "test/one/availability").text == "online",
                 what="the first prefix online")
    first_id = re.search(r"mqtt: connected to \S+ as (\S+)", run.stderr()).group(1)

    # Unchanged [mqtt]: a reload keeps the connection.
    run.proc.send_signal(signal.SIGHUP)
    _wait(lambda: "reloaded: running" in run.stderr(), what="the first reload")
    assert run.stderr().count("mqtt: connected to") == 1

    configure({"url": broker.url, "topic": "test/two"})
    run.proc.send_signal(signal.SIGHUP)
    sub.wait_for(lambda s: _latest(s, "test/two/state") and _latest(s, "test/two/availability").text == "online",
                 what="the new prefix online")
    assert _latest(sub, "test/one/availability").text == "offline"
    # The old client said goodbye (a clean DISCONNECT, not a dropped connection) before the new one connected.
    log = broker.log_text()
    assert f"Client {first_id} disconnected." in log
    assert log.index(f"Client {first_id} disconnected.") < log.rindex("New client connected")

    # A setting that cannot work is refused by the reload, naming the file; MQTT goes on as it was.
    missing = tmp_path / "no-such.password"
    configure({"url": broker.url, "topic": "test/three", "username": "edge", "password_file": missing})
    run.proc.send_signal(signal.SIGHUP)
    _wait(lambda: "reload failed" in run.stderr(), what="the refused reload")
    assert f"{missing}: [mqtt] password_file cannot be read (No such file or directory)" in run.stderr()
    assert run.stderr().count("mqtt: connected to") == 2 and _latest(sub, "test/two/availability").text == "online"
    assert not [t for t in sub.topics() if t.startswith("test/three")]
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(20) == 0, run.stderr()


# ----------------------------------------------------------------------------- off by default


def test_mqtt_is_off_by_default_and_paho_is_not_even_imported():
    code = ("import sys; from edgeclass.device.outputs.factory import build_outputs; "
            "from edgeclass.device.service.config import DeviceConfig; "
            "print(sorted(build_outputs(DeviceConfig())), 'paho' in sys.modules, 'paho.mqtt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split("\n")[0] == "['stream'] False False", out.stderr

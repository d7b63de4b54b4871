"""Benchmark: what the MQTT output costs the frame loop, per frame, with the broker up and gone.

``MqttOutput.write`` runs in the frame loop's thread for every classified
frame; everything slow (JSON, the network, reconnects) happens in the link's
thread. This prints the median time ``write`` takes, in microseconds, for:

- ``steady``: the label does not change (most frames: nothing to send);
- ``change``: the label changes on every frame (a new retained state each time);
- ``results``: as ``steady`` with ``results_per_second`` high enough that every
  frame is also queued as a ``PREFIX/result`` message;

each with the broker up and with nothing listening (reconnects going on in
the background). The frame budget at 30 fps is 33,333 us.

    python benchmarks/mqtt_output.py                      # starts mosquitto on a free port
    python benchmarks/mqtt_output.py --url mqtt://127.0.0.1:1883 --frames 50000

Needs paho-mqtt (``edgeclass[device]``) and, without ``--url``, Debian's
``mosquitto`` on PATH.

Measured on the development machine (x86-64, 2 cores shared with other work,
load average 18 during the runs, so every figure is several times a quiet
machine's), 20,000 frames, two runs (median us per write):

    steady   up 0.36 / 0.36   gone 0.38 / 0.21
    change   up 8.97 / 12.44  gone 13.80 / 6.40
    results  up 6.85 / 8.92   gone 10.88 / 15.73

The record of a change is built in the link's thread, so the loop pays for
a lock, a slot and a wake-up byte; the state slot keeps only the latest, so
20,000 changes in a few seconds became a few hundred messages, and the result
queue dropped (and counted) what the broker could not take.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgeclass.device.outputs.mqtt import MqttOutput
from edgeclass.device.pipeline.decide import Decider
from edgeclass.device.pipeline.loop import RunStats
from edgeclass.device.pipeline.sources import Frame
from edgeclass.device.service.config import DeviceConfig, build, resolve

LABELS = ("red", "green", "blue")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        sys.exit("mosquitto not found: apt install mosquitto, or pass --url mqtt://HOST:PORT")
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n")
    proc = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"mqtt://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("mosquitto did not start")


def decisions(pattern: str, n: int):
    """Real Decision objects from the decider, the label steady or changing every frame."""
    decider = Decider(LABELS, k=3)
    rgb = np.zeros((120, 160, 3), np.uint8)
    for i in range(n):
        winner = i % 3 if pattern == "change" else 0
        scores = np.full(3, 0.05, np.float32)
        scores[winner] = 0.9
        yield Frame(rgb, time.time(), i, time.monotonic()), decider.update(scores)


def measure(url: str, pattern: str, frames: int) -> tuple[float, dict]:
    mqtt = {"url": url, "topic": "bench/mqtt", "results_per_second": 1e6 if pattern == "results" else 0.0}
    config = build(resolve(DeviceConfig().to_dict(), {"mqtt": mqtt, "output": {"stats_interval": 3600.0}}))
    output = MqttOutput.from_config(config)
    # What write() asks of the run between diagnostics: nothing but the frame counter at start.
    output.start(SimpleNamespace(stats=RunStats()))
    time.sleep(0.5)  # connected (or failing) by now
    batch, times = 1000, []
    items = list(decisions(pattern, frames))
    for start in range(0, frames, batch):
        t0 = time.perf_counter()
        for frame, decision in items[start:start + batch]:
            output.write(frame, decision)
        times.append((time.perf_counter() - t0) / batch * 1e6)
    stats = output.stats()
    output.close()
    return statistics.median(times), stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running broker (default: start mosquitto on a free port)")
    parser.add_argument("--frames", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = (None, args.url) if args.url else start_mosquitto(Path(tmp))
        gone = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
        try:
            print(f"{'pattern':8} {'broker':6} {'us/frame':>9}  link")
            for pattern in ("steady", "change", "results"):
                for name, target in (("up", url), ("gone", gone)):
                    us, stats = measure(target, pattern, args.frames)
                    print(f"{pattern:8} {name:6} {us:9.2f}  {stats}")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()

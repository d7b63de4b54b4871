"""What edgeclass publishes under its topic prefix, and the JSON of each message.

Frigate's convention (``frigate/available``, ``frigate/stats``, a retained
state per camera) adapted to one classifier per prefix::

    PREFIX/availability   "online" (retained), "offline" as the Last Will and on a clean exit
    PREFIX/state          retained: the current decision, on every change and every heartbeat
    PREFIX/result         optional, not retained: every classified frame, rate-limited
    PREFIX/diagnostics    retained: frame rate, latency, backend, confidence, at the stats interval

``state`` and ``result`` carry the result stream's record
(:func:`edgeclass.device.outputs.stream.result_record`), so a JSON line and
an MQTT message of one decision are the same object.
"""

from __future__ import annotations

import re
import socket
import time
from typing import NamedTuple

from ...pipeline.loop import Runner
from ..figures import run_figures
from ..stream import iso_time

ONLINE, OFFLINE = "online", "offline"
_NOT_IN_TOPIC = re.compile(r"[+#/\x00]")


class Topics(NamedTuple):
    """The topic names under one prefix (:func:`topics_under`)."""

    prefix: str
    availability: str
    state: str
    result: str
    diagnostics: str


def topics_under(prefix: str) -> Topics:
    """``PREFIX/availability``, ``PREFIX/state``, ``PREFIX/result``, ``PREFIX/diagnostics``."""
    return Topics(prefix, *(f"{prefix}/{name}" for name in Topics._fields[1:]))


def hostname() -> str:
    """This machine's name, safe as one topic level (``raspberrypi``)."""
    return _NOT_IN_TOPIC.sub("_", socket.gethostname()) or "localhost"


def default_prefix() -> str:
    """``edgeclass/<hostname>``: one prefix per Pi."""
    return f"edgeclass/{hostname()}"


def diagnostics_record(run: Runner, fps: float, now: float, mqtt_dropped: int = 0) -> dict:
    """The ``PREFIX/diagnostics`` object: how the run is doing, from ``runner.stats`` and ``runner.monitor``.

    Built in the frame loop's thread (the monitor is updated there and is not
    shared across threads), at the stats interval only.
    """
    monitor = run.monitor.snapshot(now)
    classifier = run.classifier
    return {
        "time": iso_time(time.time()),
        **run_figures(run, fps),
        # The same names as the state file and /api/status: where it runs, and which interpreter.
        "backend": "edgetpu" if classifier.on_edgetpu else "cpu",
        "interpreter": classifier.backend,
        "edgetpu": bool(classifier.on_edgetpu),
        "bundle": run.bundle.name,
        "uncertain_rate": monitor["uncertain_rate"],
        "mean_top_score": monitor["mean_top_score"],
        "baseline_top_score": monitor["baseline_top_score"],
        "confidence_dropped": monitor["confidence_dropped"],
        "label_rates_per_min": monitor["label_rates_per_min"],
        "mqtt_dropped": mqtt_dropped,
    }

"""``/metrics``: the run's counters in the Prometheus text exposition format (version 0.0.4).

Names follow Prometheus' conventions: an ``edgeclass_`` prefix, ``_total`` on
counters, base units (seconds) with the unit in the name. Everything comes
from the loop's :meth:`~edgeclass.device.pipeline.loop.FrameLoop.status` and
its :class:`~edgeclass.device.pipeline.monitor.Monitor`; nothing is counted
twice.
"""

from __future__ import annotations

import math
import time

from ... import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(run) -> str:
    """The exposition text for a :class:`FrameLoop` (a :class:`Runner` adds the model's figures)."""
    status = run.status()
    out = _Writer()
    out.family("edgeclass_info", "gauge", "What is running (value always 1).")
    out.sample("edgeclass_info", 1, version=__version__, bundle=status.get("bundle_name") or "",
               backend=status.get("backend") or "", source=status.get("source") or "")
    out.family("edgeclass_frames_total", "counter", "Frames handled by the frame loop.")
    out.sample("edgeclass_frames_total", status["frames"])
    out.family("edgeclass_dropped_frames_total", "counter",
               "Camera frames replaced by a newer one before the loop took them.")
    out.sample("edgeclass_dropped_frames_total", status["dropped"])
    out.family("edgeclass_reopens_total", "counter", "Times the camera or stream was reopened after a fault.")
    out.sample("edgeclass_reopens_total", status["reopens"])
    out.family("edgeclass_fps", "gauge", "Frames per second over the last few seconds.")
    out.sample("edgeclass_fps", status["fps"] or 0.0)
    out.family("edgeclass_healthy", "gauge", "1 while the loop is healthy (what /healthz and the watchdog say).")
    out.sample("edgeclass_healthy", int(run.healthy()))
    monitor = getattr(run, "monitor", None)
    if monitor is not None:
        _model_metrics(out, monitor)
    mqtt = run.output("mqtt")
    if mqtt is not None:
        out.family("edgeclass_mqtt_connected", "gauge", "1 while the MQTT output is connected to its broker.")
        out.sample("edgeclass_mqtt_connected", int(bool(getattr(mqtt, "connected", False))))
    return out.text()


def _model_metrics(out: _Writer, monitor) -> None:
    snapshot = monitor.snapshot(time.monotonic())
    out.family("edgeclass_decisions_total", "counter", "Decisions per label since the start ('unknown' included).")
    for label, count in sorted(snapshot["decisions_total"].items()):
        out.sample("edgeclass_decisions_total", count, label=label)
    out.family("edgeclass_label_rate_per_minute", "gauge", "Decisions per label per minute over the rolling window.")
    for label, rate in snapshot["label_rates_per_min"].items():
        out.sample("edgeclass_label_rate_per_minute", rate, label=label)
    out.family("edgeclass_uncertain_ratio", "gauge",
               "Share of frames over the rolling window whose top score was below the decision threshold.")
    out.sample("edgeclass_uncertain_ratio", snapshot["uncertain_rate"])
    out.family("edgeclass_mean_top_score", "gauge", "Mean top score over the rolling window.")
    out.sample("edgeclass_mean_top_score", snapshot["mean_top_score"] if snapshot["mean_top_score"] is not None else math.nan)
    out.family("edgeclass_confidence_dropped", "gauge",
               "1 when the mean top score fell well below its first window: the scene changed, the model needs new data.")
    out.sample("edgeclass_confidence_dropped", int(snapshot["confidence_dropped"]))
    out.family("edgeclass_latency_seconds", "histogram", "From capture to decision.")
    count = 0
    for bound, cumulative in monitor.latency_histogram():
        out.sample("edgeclass_latency_seconds_bucket", cumulative, le="+Inf" if bound == math.inf else repr(float(bound)))
        count = cumulative
    out.sample("edgeclass_latency_seconds_sum", round(monitor.latency_sum, 6))
    out.sample("edgeclass_latency_seconds_count", count)

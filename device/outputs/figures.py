"""The run's figures as the outputs report them: frame rate over a window, latency percentiles, counters.

The result stream's statistics records and MQTT diagnostics read the same
numbers the same way (per-label and confidence figures come from
:class:`edgeclass.device.pipeline.monitor.Monitor`).
"""

from __future__ import annotations

from ..pipeline.loop import Runner


class FpsMeter:
    """Frames per second since the previous reading (the window restarts at each :meth:`read`)."""

    def __init__(self, frames: int, now: float) -> None:
        self._start, self._frames = now, frames

    def read(self, frames: int, now: float) -> float:
        """The rate over the window that ends ``now``, when the run's frame counter says ``frames``."""
        elapsed = now - self._start
        fps = (frames - self._frames) / elapsed if elapsed > 0 else 0.0
        self._start, self._frames = now, frames
        return fps


def run_figures(run: Runner, fps: float) -> dict:
    """Frame rate, latency p50/p95 (ms), frames classified, capture drops and reopens: JSON-ready."""
    st = run.stats
    grabber = run.grabber_stats()
    return {
        "fps": round(fps, 2),
        "latency_ms_p50": round(st.percentile(st.latencies_ms, 50), 2),
        "latency_ms_p95": round(st.percentile(st.latencies_ms, 95), 2),
        "frames": st.frames,
        "dropped": grabber.dropped if grabber else 0,
        "reopens": grabber.reopens if grabber else 0,
    }

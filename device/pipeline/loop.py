"""The frame loop: capture -> preprocess -> infer -> decide -> outputs.

Capture and preprocessing run in the grabber's thread, so on a multi-core Pi
they overlap inference instead of adding to it; the interpreter is built once
and only this loop touches it.

Everything the loop produces goes through one small interface,
:class:`Output` (picamera2's ``outputs.Output`` is the model): each output is
handed every classified ``(frame, decision)`` in the loop's thread, so an
output with slow work (network, JPEG encoding) queues it to a thread of its
own (:class:`edgeclass.device.outputs.base.QueuedOutput`). The result stream,
the uncertain-frame saver and the service's supervision are all outputs.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..bundle import Bundle
from .capture import FrameGrabber, GrabberStats
from .classifier import Classifier
from .config import DecisionConfig, SourceConfig
from .decide import Decision, make_decider
from .edgetpu_retry import RETRY_INTERVAL, EdgeTPURetry
from .monitor import Monitor
from .preprocess import Preprocessor
from .sources import Frame, open_source, redact

log = logging.getLogger(__name__)


class Output:
    """Where the frame loop sends each classified frame.

    The loop calls :meth:`start` once before the first frame, :meth:`write`
    for every classified frame (in the loop's thread: it must return quickly),
    :meth:`idle` when no frame arrived within the loop's poll interval, and
    :meth:`close` at the end. The frame's pixels and the decision are all an
    output gets about a result; the :class:`Runner` passed to :meth:`start`
    answers questions about the run (bundle, backend, counters).
    """

    name = "output"

    def start(self, run: "Runner") -> None:
        """The loop is about to read its first frame."""

    def write(self, frame: Frame, decision: Decision) -> None:
        """One classified frame; ``frame.rgb`` must not be modified."""
        raise NotImplementedError

    def idle(self) -> None:
        """No frame within the poll interval (the source may be stalled or recovering)."""

    def close(self) -> None:
        """The run is over; release what the output holds. Safe to call twice."""


@dataclass(frozen=True)
class RunLimits:
    """When a run ends by itself; ``None`` = never (a camera runs until stopped)."""

    max_frames: int | None = None
    duration: float | None = None


@dataclass
class RunStats:
    """Counters and recent latencies for the whole run (the outputs read them)."""

    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    first_result_s: float | None = None
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    infer_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    label: str | None = None
    score: float | None = None

    def percentile(self, values: deque, q: float) -> float:
        return float(np.percentile(np.fromiter(values, float), q)) if values else 0.0

    def summary(self, grabber: GrabberStats | None = None) -> dict:
        elapsed = time.monotonic() - self.started
        return {
            "frames": self.frames,
            "seconds": round(elapsed, 3),
            "fps": round(self.frames / elapsed, 2) if elapsed > 0 else 0.0,
            "first_result_s": None if self.first_result_s is None else round(self.first_result_s, 3),
            "latency_ms_p50": round(self.percentile(self.latencies_ms, 50), 2),
            "latency_ms_p95": round(self.percentile(self.latencies_ms, 95), 2),
            "infer_ms_p50": round(self.percentile(self.infer_ms, 50), 2),
            "dropped": grabber.dropped if grabber else 0,
            "reopens": grabber.reopens if grabber else 0,
            "label": self.label,
        }


class Runner:
    """Runs one bundle on one source until stopped, out of frames, or out of budget."""

    poll_interval = 0.25  # seconds: how often a quiet loop checks stop/duration

    def __init__(self, bundle: Bundle, classifier: Classifier, source: SourceConfig,
                 decision: DecisionConfig = DecisionConfig(), outputs: Sequence[Output] = (),
                 limits: RunLimits = RunLimits(), edgetpu_retry: float = RETRY_INTERVAL) -> None:
        self.bundle = bundle
        self.classifier = classifier
        self.source = source
        self.decision = decision
        self.outputs: list[Output] = list(outputs)
        self.limits = limits
        self.preprocess = Preprocessor(bundle.input)
        self.decider = make_decider(bundle.labels, decision)
        self.stats = RunStats()
        # "Uncertain" = below the decision threshold: the frames answered "unknown".
        self.monitor = Monitor(bundle.labels, uncertain_below=decision.threshold)
        self.stop_event = threading.Event()
        self.grabber: FrameGrabber | None = None
        self.edgetpu_retry_interval = edgetpu_retry
        self.edgetpu_retry = EdgeTPURetry.for_classifier(bundle, classifier, edgetpu_retry)

    # -- called between frames (by outputs, signal handlers, the service) ---------

    def stop(self) -> None:
        """Ask the loop to finish after the current frame (safe from signal handlers and threads)."""
        self.stop_event.set()

    def swap_bundle(self, bundle: Bundle, classifier: Classifier) -> None:
        """Replace the running model between frames (the new one must already be verified)."""
        self.bundle, self.classifier = bundle, classifier
        self.preprocess = Preprocessor(bundle.input)
        self.decider = make_decider(bundle.labels, self.decision)
        self.monitor.set_labels(bundle.labels)
        self.edgetpu_retry = EdgeTPURetry.for_classifier(bundle, classifier, self.edgetpu_retry_interval)
        if self.grabber is not None:
            self.grabber.set_preprocess(self.preprocess)

    def set_decision(self, decision: DecisionConfig) -> None:
        """Apply reloaded ``[decision]`` settings between frames."""
        if decision != self.decision:
            self.decision = decision
            self.decider = make_decider(self.bundle.labels, decision)
            self.monitor.uncertain_below = decision.threshold

    def source_description(self) -> str:
        """The source as people may see it: its real size once open, never its credentials."""
        if self.grabber is not None and self.grabber.description:
            return self.grabber.description
        return redact(self.source.source)

    def grabber_stats(self) -> GrabberStats | None:
        """The capture thread's counters, or None outside :meth:`run`."""
        return self.grabber.stats if self.grabber is not None else None

    # -- the loop -----------------------------------------------------------------

    def _make_source(self):
        s = self.source
        return open_source(s.source, width=s.width, height=s.height, fps=s.fps, loop=s.loop, realtime=s.realtime)

    def run(self) -> dict:
        """Classify frames until done; return the summary dict."""
        s, limits = self.source, self.limits
        deadline = None if limits.duration is None else time.monotonic() + limits.duration
        reopens_seen = 0
        backoff = (min(0.5, s.reopen_backoff_max), s.reopen_backoff_max)
        for output in self.outputs:
            output.start(self)
        with FrameGrabber(self._make_source, self.preprocess, stall_timeout=s.stall_timeout,
                          reopen_backoff=backoff, give_up_after=s.give_up_after or None,
                          skip_blank=s.skip_blank, blank_is_stall=s.blank_is_stall,
                          frozen_after=s.frozen_after or None,
                          retry_first_open=None if s.wait_for_source else False) as grabber:
            self.grabber = grabber
            while not self.stop_event.is_set():
                if limits.max_frames is not None and self.stats.frames >= limits.max_frames:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if self.edgetpu_retry is not None:
                    self._try_edgetpu()
                try:
                    captured = grabber.get(timeout=self.poll_interval)
                except TimeoutError:
                    for output in self.outputs:
                        output.idle()
                    continue
                if captured is None:  # a file or folder ran out
                    break
                if grabber.stats.reopens != reopens_seen:
                    reopens_seen = grabber.stats.reopens
                    self.decider.reset()  # old evidence is from before the camera came back
                # The grabber re-preprocesses frames queued before swap_bundle's
                # set_preprocess, so this tensor always suits the current model.
                decision = self._classify(captured.frame, captured.tensor)
                for output in self.outputs:
                    output.write(captured.frame, decision)
            summary = self.stats.summary(grabber.stats)
        self.grabber = None
        return summary

    def _try_edgetpu(self) -> None:
        """Swap in the Edge TPU model between frames once it loads (``auto`` mode after a fallback)."""
        tpu = self.edgetpu_retry.poll(time.monotonic())
        if tpu is not None:
            # Same bundle, same input tensor: only the interpreter changes.
            old, self.classifier, self.edgetpu_retry = self.classifier, tpu, None
            log.info("Edge TPU available now: switched from %s to %s", old.describe(), tpu.describe())

    def _classify(self, frame: Frame, tensor: np.ndarray) -> Decision:
        t0 = time.perf_counter()
        scores = self.classifier.scores(tensor)
        infer_ms = (time.perf_counter() - t0) * 1000
        now = time.time()
        decision = self.decider.update(scores)._replace(
            time=now, infer_ms=infer_ms, latency_ms=(time.monotonic() - frame.monotonic) * 1000)
        st = self.stats
        st.frames += 1
        st.latencies_ms.append(decision.latency_ms)
        st.infer_ms.append(infer_ms)
        st.label, st.score = decision.label, decision.score
        self.monitor.update(decision, time.monotonic())
        if st.first_result_s is None:
            st.first_result_s = time.monotonic() - st.started
        return decision


def install_stop_signals(runner: Runner, on_stop: Callable[[], None] | None = None,
                         on_reload: Callable[[], None] | None = None) -> Callable[[], None]:
    """SIGTERM and SIGINT stop the loop cleanly; returns a function restoring the old handlers.

    ``on_stop`` runs in the handler too (tell systemd ``STOPPING=1`` at once).
    With ``on_reload``, SIGHUP calls it instead of killing the process; it
    must only take note (set a flag): the loop does the work between frames.
    """
    previous = {}

    def handler(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        runner.stop()
        if on_stop is not None:
            on_stop()

    def hup(signum, _frame):
        log.info("received SIGHUP, reloading")
        on_reload()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    if on_reload is not None:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hup)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore

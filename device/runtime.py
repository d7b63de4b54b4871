"""The live loop: capture -> preprocess -> infer -> decide -> sink.

Capture and preprocessing run in the grabber's thread, so on a multi-core Pi
they overlap inference instead of adding to it; the interpreter is built once
and only this loop touches it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Callable

import numpy as np

from .bundle import Bundle
from .capture import FrameGrabber
from .classifier import Classifier, EdgeTPU, open_classifier
from .decide import Decider, Decision
from .preprocess import Preprocessor
from .sinks import Sink
from .sources import Frame, open_source

log = logging.getLogger(__name__)


class Emit(str, Enum):
    """Which results reach the sink."""

    ALL = "all"  # every classified frame
    CHANGES = "changes"  # when the decided label changes, plus a heartbeat


@dataclass(frozen=True)
class RunOptions:
    """Everything ``edgeclass run`` can be told; defaults suit a camera on a Pi."""

    threads: int | None = None
    edgetpu: EdgeTPU = EdgeTPU.AUTO
    top_k: int = 3
    threshold: float = 0.5
    smoothing: float = 0.0
    emit: Emit = Emit.ALL
    heartbeat: float = 10.0  # seconds between repeats of an unchanged decision (Emit.CHANGES)
    stats_interval: float = 0.0  # seconds between stats records; 0 = none
    max_frames: int | None = None
    duration: float | None = None
    stall_timeout: float = 5.0
    give_up_after: float | None = 300.0
    reopen_backoff_max: float = 30.0  # longest wait between reopen attempts (the wait doubles from 0.5 s)
    skip_blank: bool = True
    wait_for_source: bool = False  # retry a camera that is absent at start (a service at boot) instead of failing
    loop: bool = False
    realtime: bool = False  # pace a file or folder at its frame rate, like a camera (rehearsals, soak tests)
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass
class RunStats:
    """Counters and recent latencies, for stats records and the final summary."""

    started: float = field(default_factory=time.perf_counter)
    frames: int = 0
    first_result_s: float | None = None
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    infer_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    label: str | None = None
    window_start: float = field(default_factory=time.perf_counter)
    window_frames: int = 0

    def percentile(self, values: deque, q: float) -> float:
        return float(np.percentile(np.fromiter(values, float), q)) if values else 0.0

    def summary(self, dropped: int = 0, reopens: int = 0) -> dict:
        elapsed = time.perf_counter() - self.started
        return {
            "frames": self.frames,
            "seconds": round(elapsed, 3),
            "fps": round(self.frames / elapsed, 2) if elapsed > 0 else 0.0,
            "first_result_s": None if self.first_result_s is None else round(self.first_result_s, 3),
            "latency_ms_p50": round(self.percentile(self.latencies_ms, 50), 2),
            "latency_ms_p95": round(self.percentile(self.latencies_ms, 95), 2),
            "infer_ms_p50": round(self.percentile(self.infer_ms, 50), 2),
            "dropped": dropped,
            "reopens": reopens,
            "label": self.label,
        }


class RunHooks:
    """Called by the loop at the moments a supervisor cares about (systemd, tests)."""

    def ready(self, runner: "Runner") -> None:
        """The source is open and the first frame has been classified."""

    def result(self, runner: "Runner", decision: Decision) -> None:
        """A frame was classified (called for every frame, emitted or not)."""

    def idle(self, runner: "Runner") -> None:
        """No frame arrived within the poll interval (the source may be stalled)."""


class HookChain(RunHooks):
    """Several hooks called in order (systemd supervision, uncertain-frame saving, ...)."""

    def __init__(self, *hooks: RunHooks) -> None:
        self.hooks = [h for h in hooks if h is not None]

    def ready(self, runner: "Runner") -> None:
        for hook in self.hooks:
            hook.ready(runner)

    def result(self, runner: "Runner", decision: Decision) -> None:
        for hook in self.hooks:
            hook.result(runner, decision)

    def idle(self, runner: "Runner") -> None:
        for hook in self.hooks:
            hook.idle(runner)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class Runner:
    """Runs one bundle on one source until stopped, out of frames, or out of budget."""

    poll_interval = 0.25  # seconds: how often a quiet loop checks stop/duration

    def __init__(self, bundle: Bundle, source: str, sink: Sink, options: RunOptions = RunOptions(),
                 hooks: RunHooks | None = None, classifier: Classifier | None = None) -> None:
        self.bundle = bundle
        self.source = source
        self.sink = sink
        self.options = options
        self.hooks = hooks or RunHooks()
        self.classifier = classifier or open_classifier(bundle, num_threads=options.threads, edgetpu=options.edgetpu)
        self.preprocess = Preprocessor(bundle.input)
        self.decider = Decider(bundle.labels, k=options.top_k, threshold=options.threshold, smoothing=options.smoothing)
        self.stats = RunStats()
        self.stop_event = threading.Event()
        self.grabber: FrameGrabber | None = None
        # The frame and raw (unsmoothed) scores behind the latest decision, for
        # hooks.result: e.g. saving the frames the model was unsure about.
        self.frame: Frame | None = None
        self.scores: np.ndarray | None = None

    def stop(self) -> None:
        """Ask the loop to finish after the current frame (safe from signal handlers and threads)."""
        self.stop_event.set()

    def swap_bundle(self, bundle: Bundle, classifier: Classifier) -> None:
        """Replace the running model between frames (the new one must already be validated)."""
        self.bundle, self.classifier = bundle, classifier
        self.preprocess = Preprocessor(bundle.input)
        o = self.options
        self.decider = Decider(bundle.labels, k=o.top_k, threshold=o.threshold, smoothing=o.smoothing)
        if self.grabber is not None:
            self.grabber.set_preprocess(self.preprocess)

    def set_options(self, options: RunOptions) -> None:
        """Apply reloaded decision and output settings between frames.

        Capture settings (size, stall timeout, backoff, give-up) belong to the
        grabber, which is built once per run: they take effect on a restart.
        """
        old, self.options = self.options, options
        if (old.top_k, old.threshold, old.smoothing) != (options.top_k, options.threshold, options.smoothing):
            self.decider = Decider(self.bundle.labels, k=options.top_k, threshold=options.threshold,
                                   smoothing=options.smoothing)

    def _make_source(self):
        o = self.options
        return open_source(self.source, width=o.width, height=o.height, fps=o.fps, loop=o.loop, realtime=o.realtime)

    def run(self) -> dict:
        """Classify frames until done; return the summary dict."""
        o = self.options
        deadline = None if o.duration is None else time.monotonic() + o.duration
        last_emit = 0.0
        next_stats = time.monotonic() + o.stats_interval if o.stats_interval > 0 else None
        reopens_seen = 0
        backoff = (min(0.5, o.reopen_backoff_max), o.reopen_backoff_max)
        with FrameGrabber(self._make_source, self.preprocess, stall_timeout=o.stall_timeout,
                          reopen_backoff=backoff, give_up_after=o.give_up_after, skip_blank=o.skip_blank,
                          retry_first_open=None if o.wait_for_source else False) as grabber:
            self.grabber = grabber
            while not self.stop_event.is_set():
                if o.max_frames is not None and self.stats.frames >= o.max_frames:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                try:
                    captured = grabber.get(timeout=self.poll_interval)
                except TimeoutError:
                    self.hooks.idle(self)
                    continue
                if captured is None:  # a file or folder ran out
                    break
                # The grabber re-preprocesses frames queued before swap_bundle's
                # set_preprocess, so this tensor always suits the current model.
                tensor = captured.tensor
                if grabber.stats.reopens != reopens_seen:
                    reopens_seen = grabber.stats.reopens
                    self.decider.reset()  # old evidence is from before the camera came back
                t0 = time.perf_counter()
                scores = self.classifier.scores(tensor)
                infer_ms = (time.perf_counter() - t0) * 1000
                decision = self.decider.update(scores)
                now = time.time()
                latency_ms = (now - captured.frame.timestamp) * 1000
                st = self.stats
                st.frames += 1
                st.window_frames += 1
                st.latencies_ms.append(latency_ms)
                st.infer_ms.append(infer_ms)
                st.label = decision.label
                first = st.first_result_s is None
                if first:
                    st.first_result_s = time.perf_counter() - st.started
                self.frame, self.scores = captured.frame, scores
                mono = time.monotonic()
                event = self._event(decision, mono - last_emit)
                if event is not None:
                    last_emit = mono
                    self.sink.emit({
                        "event": event,
                        "time": _iso(now),
                        "ts": round(now, 3),
                        "frame": captured.frame.index,
                        "label": decision.label,
                        "score": round(decision.score, 4),
                        "top_k": [{"label": s.label, "score": round(s.score, 4)} for s in decision.top_k],
                        "latency_ms": round(latency_ms, 2),
                        "infer_ms": round(infer_ms, 2),
                    })
                if first:  # after the first result is out: "ready" means results are flowing
                    self.hooks.ready(self)
                self.hooks.result(self, decision)
                o = self.options  # a reload in hooks.result may have replaced them
                if o.stats_interval <= 0:
                    next_stats = None
                elif next_stats is None or mono >= next_stats:
                    if next_stats is not None:
                        self._emit_stats(grabber)
                    next_stats = mono + o.stats_interval
            summary = self.stats.summary(grabber.stats.dropped, grabber.stats.reopens)
        self.grabber = None
        return summary

    def _event(self, decision: Decision, since_emit: float) -> str | None:
        if self.options.emit is Emit.ALL:
            return "change" if decision.changed else "frame"
        if decision.changed:
            return "change"
        if since_emit >= self.options.heartbeat:
            return "heartbeat"
        return None

    def _emit_stats(self, grabber: FrameGrabber) -> None:
        st = self.stats
        now = time.perf_counter()
        window = now - st.window_start
        fps = st.window_frames / window if window > 0 else 0.0
        st.window_start, st.window_frames = now, 0
        self.sink.emit({
            "event": "stats",
            "time": _iso(time.time()),
            "fps": round(fps, 2),
            "latency_ms_p50": round(st.percentile(st.latencies_ms, 50), 2),
            "latency_ms_p95": round(st.percentile(st.latencies_ms, 95), 2),
            "frames": st.frames,
            "dropped": grabber.stats.dropped,
            "reopens": grabber.stats.reopens,
        })


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

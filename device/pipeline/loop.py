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

:class:`Runner` is the loop with a model; :class:`CaptureLoop` the same loop
without one (frames only, for collecting photos before a model exists). Both
report on themselves through :meth:`FrameLoop.status`, the one builder of
the service's state file and of the HTTP API's status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..bundle import Bundle
from .capture import Captured, FrameGrabber, GrabberStats
from .classifier import Classifier
from .config import DecisionConfig, SourceConfig
from .decide import Decision, make_decider
from .edgetpu_retry import RETRY_INTERVAL, EdgeTPURetry
from .monitor import Monitor
from .preprocess import Preprocessor
from .sources import Frame, open_source, redact

log = logging.getLogger(__name__)

FPS_WINDOW = 2.0  # seconds of frames behind the live fps figure


class Output:
    """Where the frame loop sends each classified frame.

    The loop calls :meth:`start` once before the first frame, :meth:`write`
    for every classified frame (in the loop's thread: it must return quickly),
    :meth:`idle` when no frame arrived within the loop's poll interval, and
    :meth:`close` at the end. The frame's pixels and the decision are all an
    output gets about a result; the :class:`Runner` passed to :meth:`start`
    answers questions about the run (bundle, backend, counters).

    A :class:`CaptureLoop` (frames without a model, ``edgeclass collect
    --labels``) calls :meth:`write` with ``decision=None``; only outputs whose
    ``takes_frames_only`` is true are given to one.
    """

    name = "output"
    takes_frames_only = False

    def start(self, run: "FrameLoop") -> None:
        """The loop is about to read its first frame."""

    def write(self, frame: Frame, decision: Decision | None) -> None:
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
    """Counters and recent latencies for the whole run (the outputs read them).

    Written by the frame loop's thread only; other threads read single
    attributes (each read sees a whole value).
    """

    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)  # Unix time, for people and the state file
    frames: int = 0
    first_result_s: float | None = None
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    infer_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    label: str | None = None
    score: float | None = None
    resolution: tuple[int, int] | None = None  # (width, height) of the latest frame
    fps: float | None = None  # over the last FPS_WINDOW seconds; None until the first window ends
    _fps_mark: tuple[float, int] | None = None

    def percentile(self, values: deque, q: float) -> float:
        # deque.copy() is one C call: safe while the loop thread appends (iterating it directly is not).
        values = values.copy()
        return float(np.percentile(np.fromiter(values, float), q)) if values else 0.0

    def tick(self, now: float) -> None:
        """Roll the fps window (the loop calls it after every frame and when idle, so a stall reads 0 fps)."""
        if self._fps_mark is None:
            self._fps_mark = (self.started, 0)
        mark_time, mark_frames = self._fps_mark
        if now - mark_time >= FPS_WINDOW:
            self.fps = (self.frames - mark_frames) / (now - mark_time)
            self._fps_mark = (now, self.frames)

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


class StatusHook:
    """Adds to what a loop reports about itself: :meth:`FrameLoop.status` and :meth:`FrameLoop.healthy`.

    The service's supervisor is one (process id, last error, and the same
    liveness its watchdog pings on), so the state file, ``/api/status`` and
    ``/healthz`` all come from one place without the outputs importing the
    service.
    """

    def status(self) -> dict:
        """Keys to add to the loop's status."""
        return {}

    def healthy(self, now: float) -> bool | None:
        """Whether the loop is healthy at monotonic time ``now``; ``None`` = no opinion."""
        return None


class FrameLoop:
    """Reads frames from one source until stopped, out of frames, or out of budget, and hands them on.

    The shared half of :class:`Runner` (frames through a model) and
    :class:`CaptureLoop` (frames only): the capture thread, the limits, the
    stop flag, the counters and the status.
    """

    poll_interval = 0.25  # seconds: how often a quiet loop checks stop/duration

    def __init__(self, source: SourceConfig, outputs: Sequence[Output] = (), limits: RunLimits = RunLimits()) -> None:
        self.source = source
        self.outputs: list[Output] = list(outputs)
        self.limits = limits
        self.stats = RunStats()
        self.stop_event = threading.Event()
        self.grabber: FrameGrabber | None = None
        self.status_hooks: list[StatusHook] = []

    # -- called between frames (by outputs, signal handlers, the service) ---------

    def stop(self) -> None:
        """Ask the loop to finish after the current frame (safe from signal handlers and threads)."""
        self.stop_event.set()

    def source_description(self) -> str:
        """The source as people may see it: its real size once open, never its credentials."""
        if self.grabber is not None and self.grabber.description:
            return self.grabber.description
        return redact(self.source.source)

    def grabber_stats(self) -> GrabberStats | None:
        """The capture thread's counters, or None outside :meth:`run`."""
        return self.grabber.stats if self.grabber is not None else None

    def output(self, name: str) -> Output | None:
        """The running output called ``name`` (``"mqtt"``, ``"http"``), or None."""
        return next((o for o in self.outputs if getattr(o, "name", None) == name), None)

    def add_status_hook(self, hook: StatusHook) -> None:
        """Let ``hook`` add keys to :meth:`status` and a verdict to :meth:`healthy` (once per hook)."""
        if hook not in self.status_hooks:
            self.status_hooks.append(hook)

    # -- what the loop reports ----------------------------------------------------

    def status(self) -> dict:
        """What the loop is doing, as plain JSON-ready data: the service's state file and ``/api/status``."""
        st = self.stats
        grabber = self.grabber_stats()
        status = {
            "started_at": round(st.started_at, 3),
            "fps": None if st.fps is None else round(st.fps, 2),
            "frames": st.frames,
            "dropped": grabber.dropped if grabber else 0,
            "reopens": grabber.reopens if grabber else 0,
            "source": self.source_description(),
            "resolution": None if st.resolution is None else f"{st.resolution[0]}x{st.resolution[1]}",
            "latency_ms_p50": round(st.percentile(st.latencies_ms, 50), 2),
            "latency_ms_p95": round(st.percentile(st.latencies_ms, 95), 2),
        }
        for hook in self.status_hooks:
            status.update(hook.status())
        return status

    def healthy(self, now: float | None = None) -> bool:
        """The hooks' verdict (the service's watchdog liveness); without one: frames are arriving."""
        now = time.monotonic() if now is None else now
        verdicts = [v for v in (hook.healthy(now) for hook in self.status_hooks) if v is not None]
        if verdicts:
            return all(verdicts)
        grabber = self.grabber_stats()
        return grabber is not None and self.stats.frames > 0 and not grabber.is_stalled

    # -- the loop -----------------------------------------------------------------

    def _make_source(self):
        s = self.source
        return open_source(s.source, width=s.width, height=s.height, fps=s.fps, loop=s.loop, realtime=s.realtime)

    def _preprocess(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """What the capture thread runs on each frame (a model's input tensor), or None."""
        return None

    def _handle(self, captured: Captured, reopened: bool) -> None:
        """One frame from the grabber (``reopened``: the source came back since the last one)."""
        raise NotImplementedError

    def _between_frames(self) -> None:
        """Work the loop does before it waits for the next frame (nothing, here)."""

    def run(self) -> dict:
        """Take frames until done; return the summary dict."""
        s, limits = self.source, self.limits
        deadline = None if limits.duration is None else time.monotonic() + limits.duration
        reopens_seen = 0
        backoff = (min(0.5, s.reopen_backoff_max), s.reopen_backoff_max)
        for output in self.outputs:
            output.start(self)
        with FrameGrabber(self._make_source, self._preprocess(), stall_timeout=s.stall_timeout,
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
                self._between_frames()
                try:
                    captured = grabber.get(timeout=self.poll_interval)
                except TimeoutError:
                    self.stats.tick(time.monotonic())
                    for output in self.outputs:
                        output.idle()
                    continue
                if captured is None:  # a file or folder ran out
                    break
                reopened = grabber.stats.reopens != reopens_seen
                reopens_seen = grabber.stats.reopens
                self._handle(captured, reopened)
            summary = self.stats.summary(grabber.stats)
        self.grabber = None
        return summary

    def _count(self, frame: Frame) -> None:
        st = self.stats
        st.frames += 1
        st.resolution = (frame.rgb.shape[1], frame.rgb.shape[0])
        now = time.monotonic()
        st.tick(now)
        if st.first_result_s is None:
            st.first_result_s = now - st.started


class Runner(FrameLoop):
    """Runs one bundle on one source until stopped, out of frames, or out of budget."""

    def __init__(self, bundle: Bundle, classifier: Classifier, source: SourceConfig,
                 decision: DecisionConfig = DecisionConfig(), outputs: Sequence[Output] = (),
                 limits: RunLimits = RunLimits(), edgetpu_retry: float = RETRY_INTERVAL) -> None:
        super().__init__(source, outputs, limits)
        self.bundle = bundle
        self.classifier = classifier
        self.edgetpu_retry_interval = edgetpu_retry
        self.edgetpu_retry = EdgeTPURetry.for_classifier(bundle, classifier, edgetpu_retry)
        self.decision = decision
        self.preprocess = Preprocessor(bundle.input)
        self.decider = make_decider(bundle.labels, decision)
        # "Uncertain" = below the decision threshold: the frames answered "unknown".
        self.monitor = Monitor(bundle.labels, uncertain_below=decision.threshold)
        self.latest: Decision | None = None
        self.classified_by: Bundle | None = None  # the bundle behind `latest` (after a swap, until its first frame)

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

    def status(self) -> dict:
        st = self.stats
        bundle = self.classified_by
        status = {
            "label": st.label,
            "score": None if st.score is None else round(st.score, 4),
            "bundle_name": None if bundle is None else bundle.name,
            "bundle_path": None if bundle is None else str(bundle.path),
            "backend": "edgetpu" if self.classifier.on_edgetpu else "cpu",
            "interpreter": self.classifier.backend,
            "model": self.classifier.model_path.name,
        }
        snapshot = self.monitor.snapshot(time.monotonic())
        status.update({key: snapshot[key] for key in ("uncertain_rate", "mean_top_score", "confidence_dropped")})
        status.update(super().status())
        return status

    def _preprocess(self) -> Callable[[np.ndarray], np.ndarray] | None:
        return self.preprocess

    def _between_frames(self) -> None:
        if self.edgetpu_retry is not None:
            self._try_edgetpu()

    def _handle(self, captured: Captured, reopened: bool) -> None:
        if reopened:
            self.decider.reset()  # old evidence is from before the camera came back
        # The grabber re-preprocesses frames queued before swap_bundle's
        # set_preprocess, so this tensor always suits the current model.
        decision = self._classify(captured.frame, captured.tensor)
        for output in self.outputs:
            output.write(captured.frame, decision)

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
        st.latencies_ms.append(decision.latency_ms)
        st.infer_ms.append(infer_ms)
        st.label, st.score = decision.label, decision.score
        self.latest, self.classified_by = decision, self.bundle
        self.monitor.update(decision, time.monotonic())
        self._count(frame)
        return decision


class CaptureLoop(FrameLoop):
    """Frames without a model: each frame goes to the outputs with ``decision=None``.

    ``edgeclass collect --labels a,b,c`` shows the camera and saves frames
    before any model exists; nothing is preprocessed or classified.
    """

    def __init__(self, source: SourceConfig, outputs: Sequence[Output] = (), limits: RunLimits = RunLimits()) -> None:
        for output in outputs:
            if not output.takes_frames_only:
                raise ValueError(f"output {output.name} needs decisions; a capture-only loop has none")
        super().__init__(source, outputs, limits)

    def _handle(self, captured: Captured, reopened: bool) -> None:
        frame = captured.frame
        # Latency here is capture to hand-over: what a viewer of the page waits.
        self.stats.latencies_ms.append((time.monotonic() - frame.monotonic) * 1000)
        self._count(frame)
        for output in self.outputs:
            output.write(frame, None)

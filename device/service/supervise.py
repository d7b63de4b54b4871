"""The run loop under a supervisor: systemd notifications, the watchdog, the state file, reloads.

:class:`Supervisor` is the last of the frame loop's outputs
(:class:`~edgeclass.device.pipeline.loop.Output`), so everything here happens
*in the frame loop's thread*:

- ``READY=1`` after the first frame is classified (the source is open and the
  model works), and again after every reload;
- ``STATUS=`` with fps and the current label, at most every few seconds;
- ``WATCHDOG=1`` every half ``WatchdogSec`` while :class:`Liveness` says the
  loop is healthy (see there for the policy);
- ``RELOADING=1`` when a SIGHUP reload starts, ``READY=1`` when it has been
  applied or refused (the old model keeps running; the error is logged once);
- the state file (:mod:`.state`) every ``state_interval`` seconds.

Outside systemd the notifications are no-ops, so ``edgeclass run`` uses the
same supervisor interactively.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from ..errors import EdgeclassError
from ..pipeline.capture import GrabberStats
from ..pipeline.decide import Decision
from ..pipeline.loop import Output, Runner
from ..pipeline.sources import Frame
from . import systemd
from .hotreload import Reloader
from .state import write_state

log = logging.getLogger(__name__)

STATUS_INTERVAL = 5.0  # seconds between STATUS= lines: `systemctl status` is read by people
FPS_WINDOW = 2.0  # seconds of frames behind the fps figure


class Liveness:
    """Whether the frame loop deserves a watchdog ping.

    The policy: pings come only from the frame loop's own thread (an
    interpreter or sink that hangs stops them by itself), and only while the
    loop has recently classified a frame, *or* the capture thread has read
    one (a blank frame of a dark scene is not classified but proves the
    camera works), *or* the capture thread made a recovery attempt that could
    succeed: a new reopen attempt or a new error while no reader is stuck in
    the driver. ``grace`` must exceed the longest quiet gap of a healthy
    recovery: a stall is noticed after ``stall_timeout`` and the next attempt
    follows at most ``reopen_backoff_max`` later.

    So an unplugged camera keeps the watchdog fed while the capture thread
    retries, and ``give_up_after`` ends the process with a clear error. But a
    reader stuck in the driver holds the device: every later attempt fails
    (busy) or hangs, and a failed attempt is not progress then. The pings stop
    ``grace`` after the last frame, and systemd restarts the service at most
    ``WatchdogSec`` later (with the defaults 40 s + 30 s) instead of waiting
    for the give-up; the restart is what frees the device.
    """

    def __init__(self, grace: float, now: float) -> None:
        self.grace = grace
        self.last_progress = now  # start-up counts: opening the source is progress
        self._seen: GrabberStats | None = None

    def frame(self, now: float) -> None:
        self.last_progress = now

    def observe(self, stats: GrabberStats, now: float) -> None:
        """Note capture progress since the last call: a frame read, or a retry that can succeed."""
        seen, self._seen = self._seen, stats
        if seen is None:  # the first observation is the baseline
            return
        if stats.frames_read != seen.frames_read:
            self.last_progress = now
        elif (stats.reopens, stats.last_error) != (seen.reopens, seen.last_error) and stats.stuck_readers == 0:
            self.last_progress = now

    def healthy(self, now: float) -> bool:
        return now - self.last_progress <= self.grace

    @classmethod
    def for_options(cls, stall_timeout: float, reopen_backoff_max: float, now: float) -> "Liveness":
        # 5 s slack on top of the longest healthy gap: the capture supervisor
        # polls, and a loaded Pi schedules late.
        return cls(stall_timeout + reopen_backoff_max + 5.0, now)


class Supervisor(Output):
    """systemd notifications, watchdog pings, state file and SIGHUP reloads for one run."""

    name = "supervisor"

    def __init__(self, *, watchdog: systemd.Watchdog, liveness: Liveness, state_file: Path | None = None,
                 state_interval: float = 2.0, reloader: Reloader | None = None,
                 apply_reload: Callable[[Runner, object], str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.watchdog = watchdog
        self.liveness = liveness
        self.state_file = Path(state_file) if state_file is not None else None
        self.state_interval = state_interval
        self.reloader = reloader
        self.apply_reload = apply_reload
        self.clock = clock
        self.started_at = time.time()
        self.last_error: str | None = None
        self._label: str | None = None
        self._score = 0.0
        self._frames = 0
        self._fps: float | None = None
        self._fps_mark = (clock(), 0)
        self._running = None  # the bundle that classified the latest frame
        self._last_ping: float | None = None
        self._next_status = 0.0
        self._next_state = 0.0
        self._quiet_logged = False
        self._state_warned = False
        self._run: Runner | None = None
        self._stopping = False
        if self.state_file is not None:
            try:
                self._write_state()
            except OSError as exc:
                raise EdgeclassError(f"{self.state_file}: cannot write the state file ({exc.strerror}); "
                                     "set [service] state_file to a writable place") from None

    # -- the frame loop's calls ---------------------------------------------------

    def start(self, run: Runner) -> None:
        self._run = run

    def write(self, frame: Frame, decision: Decision) -> None:
        runner = self._run
        now = self.clock()
        first = self._frames == 0
        self._running = runner.bundle  # it produced this decision: now it "really classifies"
        self._frames += 1
        self._label, self._score = decision.label, decision.score
        self.liveness.frame(now)
        if first:  # the outputs before this one have the result: "ready" means results are flowing
            log.info("ready: first frame classified with %s", runner.bundle.name)
            systemd.ready(self._status_text())
            self._next_status = now + STATUS_INTERVAL
        self._tick(runner, now)

    def idle(self) -> None:
        runner = self._run
        now = self.clock()
        stats = runner.grabber_stats()
        if stats is not None:
            self.liveness.observe(stats, now)
            if stats.is_stalled:
                self.last_error = stats.last_error
        self._tick(runner, now)

    # -- called by the command ---------------------------------------------------

    def stopping(self) -> None:
        """SIGTERM: tell systemd at once; the loop ends after the current frame."""
        # Set before notifying: the frame loop may still finish one frame, and
        # nothing (no WATCHDOG=1, no STATUS=) should follow STOPPING=1.
        self._stopping = True
        systemd.stopping()

    def failed(self, message: str) -> None:
        """The run ends with an error (e.g. the camera gave up): say so where people look."""
        self.last_error = message
        systemd.status(f"failed: {message}")
        self._write_state_quietly()

    # -- the periodic work ---------------------------------------------------------

    def _tick(self, runner: Runner, now: float) -> None:
        self._update_fps(now)
        if self._stopping:
            return
        # systemd arms the watchdog at READY=1; start-up has TimeoutStartSec instead.
        if self._running is not None and self.watchdog.due(self._last_ping, now):
            if self.liveness.healthy(now):
                self.watchdog.ping()
                self._last_ping = now
                self._quiet_logged = False
            elif not self._quiet_logged:
                self._quiet_logged = True
                log.error("no frame and no recovery progress for %.0f s: stopping watchdog pings so systemd "
                          "restarts the service", now - self.liveness.last_progress)
        if now >= self._next_status:
            self._next_status = now + STATUS_INTERVAL
            systemd.status(self._status_text(runner))
        if self.state_file is not None and now >= self._next_state:
            self._next_state = now + self.state_interval
            self._write_state_quietly()
        if self.reloader is not None:
            self._reload_step(runner)

    def _update_fps(self, now: float) -> None:
        mark_time, mark_frames = self._fps_mark
        if now - mark_time >= FPS_WINDOW:
            self._fps = (self._frames - mark_frames) / (now - mark_time)
            self._fps_mark = (now, self._frames)

    def _status_text(self, runner: Runner | None = None) -> str:
        stats = runner.grabber_stats() if runner is not None else None
        if stats is not None and stats.is_stalled:
            return f"no frames: {stats.last_error}; reopening ({stats.reopens} reopens)"
        if stats is not None and stats.only_blank_for is not None:
            return (f"only blank frames for {stats.only_blank_for:.0f} s (dark scene or covered lens; "
                    f"{stats.blank_skipped} skipped, not classified)")
        fps = "" if self._fps is None else f"{self._fps:.1f} fps, "
        name = f", bundle {self._running.name}" if self._running is not None else ""
        return f"{fps}{self._label} ({self._score:.2f}){name}"

    def _write_state(self) -> None:
        bundle = self._running
        write_state(self.state_file, {
            "pid": os.getpid(),
            "started_at": round(self.started_at, 3),
            "fps": None if self._fps is None else round(self._fps, 2),
            "label": self._label,
            "frames": self._frames,
            "last_error": self.last_error,
            "bundle_name": None if bundle is None else bundle.name,
            "bundle_path": None if bundle is None else str(bundle.path),
        })

    def _write_state_quietly(self) -> None:
        if self.state_file is None:
            return
        try:
            self._write_state()
        except OSError as exc:  # /run full or gone: the service itself must go on
            if not self._state_warned:
                self._state_warned = True
                log.warning("%s: cannot write the state file (%s); carrying on without it", self.state_file, exc.strerror)

    def _reload_step(self, runner: Runner) -> None:
        if self.reloader.start_if_requested():
            systemd.reloading()
            systemd.status("reloading config and bundle")
        outcome = self.reloader.collect()
        if outcome is None:
            return
        if outcome.error is not None:
            self.last_error = f"reload failed: {outcome.error}"
            log.error("reload failed, still running %s: %s", runner.bundle.path, outcome.error)
            systemd.ready(f"reload failed, still running {runner.bundle.name}: {outcome.error}")
        else:
            try:
                what = self.apply_reload(runner, outcome.value) if self.apply_reload else "reloaded"
            except EdgeclassError as exc:
                self.last_error = f"reload failed: {exc}"
                log.error("reload failed, still running %s: %s", runner.bundle.path, exc)
                systemd.ready(f"reload failed, still running {runner.bundle.name}: {exc}")
                return
            self.last_error = None
            log.info("%s", what)
            systemd.ready(what)
        self._next_status = self.clock() + STATUS_INTERVAL

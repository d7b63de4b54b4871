"""The run loop under a supervisor: systemd notifications, the watchdog, the state file, reloads.

:class:`Supervisor` is the last of the frame loop's outputs
(:class:`~edgeclass.device.pipeline.loop.Output`), so everything here happens
*in the frame loop's thread*:

- ``READY=1`` after the first frame is classified (the source is open and the
  model works), or as soon as the service starts *waiting* for something
  outside it, a camera absent at boot or a first bundle not deployed yet
  (with ``STATUS=waiting for ...``): start-up is over, the unit is active and
  the watchdog armed, and ``TimeoutStartSec=`` never cuts the wait short;
  ``READY=1`` again after every reload;
- ``STATUS=`` with fps and the current label, at most every few seconds;
- ``WATCHDOG=1`` every half ``WatchdogSec`` while :class:`Liveness` says the
  loop is healthy (see there for the policy);
- ``RELOADING=1`` when a SIGHUP reload starts, ``READY=1`` when it has been
  applied, refused or given up after ``reload_timeout`` (the old model keeps
  running; the error is logged once);
- the state file (:mod:`.state`) every ``state_interval`` seconds: what
  runs (bundle, model, backend, the Edge TPU setting), the source and its
  resolution, and the counters (frames, dropped frames, reopens).

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
from ..pipeline.loop import Output, Runner, StatusHook
from ..pipeline.sources import Frame, redact
from . import systemd
from .hotreload import Reloader
from .state import write_state

log = logging.getLogger(__name__)

STATUS_INTERVAL = 5.0  # seconds between STATUS= lines: `systemctl status` is read by people


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


class Supervisor(Output, StatusHook):
    """systemd notifications, watchdog pings, state file and SIGHUP reloads for one run.

    It is also the run's :class:`~edgeclass.device.pipeline.loop.StatusHook`:
    the state file is :meth:`Runner.status` plus the keys only the service
    knows (process id, status line, last error, the Edge TPU setting), and the
    watchdog's :class:`Liveness` is the run's health, so ``/api/status`` and
    ``/healthz`` say what the state file and the watchdog say.

    It exists before the bundle is loaded (the state file and READY=1 may be
    needed while the service waits for a first bundle: :meth:`waiting`,
    :meth:`wait_tick`), and becomes the frame loop's last output once the
    runner starts.
    """

    name = "supervisor"

    def __init__(self, *, watchdog: systemd.Watchdog, liveness: Liveness, state_file: Path | None = None,
                 state_interval: float = 2.0, edgetpu_setting: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.watchdog = watchdog
        self.liveness = liveness
        self.state_file = Path(state_file) if state_file is not None else None
        self.state_interval = state_interval
        self.edgetpu_setting = edgetpu_setting
        self.reloader: Reloader | None = None
        self.apply_reload: Callable[[Runner, object], str] | None = None
        self.clock = clock
        self.started_at = time.time()
        self.last_error: str | None = None
        self._status = "starting"
        self._frames = 0
        self._running = None  # the bundle that classified the latest frame
        self._ready = False  # READY=1 sent: start-up is over, the watchdog is armed
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

    def attach_reloader(self, reloader: Reloader, apply: Callable[[Runner, object], str]) -> None:
        """SIGHUP reloads: ``reloader`` prepares in the background, ``apply`` swaps in between frames."""
        self.reloader, self.apply_reload = reloader, apply

    def configure(self, *, state_file: Path | None, state_interval: float, edgetpu_setting: str) -> None:
        """Settings a reload may change."""
        if state_file is not None:
            self.state_file = state_file
        self.state_interval = state_interval
        self.edgetpu_setting = edgetpu_setting

    # -- before the frame loop: waiting for a first bundle --------------------------

    def waiting(self, status: str, error: str | None = None) -> None:
        """The service is up but waits for something outside it: READY=1 once, then STATUS=."""
        self._status, self.last_error = status, error
        if self._stopping:
            return
        if not self._ready:
            self._ready = True
            systemd.ready(status)
        else:
            systemd.status(status)
        self._next_status = self.clock() + STATUS_INTERVAL
        self._write_state_quietly()

    def wait_tick(self) -> None:
        """Periodic work while waiting outside the frame loop: the waiting loop itself is alive."""
        now = self.clock()
        if self._stopping:
            return
        if self._ready and self.watchdog.due(self._last_ping, now):
            self.watchdog.ping()
            self._last_ping = now
        if now >= self._next_status:
            self._next_status = now + STATUS_INTERVAL
            systemd.status(self._status)
        if self.state_file is not None and now >= self._next_state:
            self._next_state = now + self.state_interval
            self._write_state_quietly()

    # -- the frame loop's calls ---------------------------------------------------

    def start(self, run: Runner) -> None:
        self._run = run
        run.add_status_hook(self)
        self.last_error = None  # a bundle refused while waiting for one is history now
        self._status = f"starting {run.bundle.name}"
        # Opening the source is progress: a long wait for a first bundle must not
        # count as a silent loop once the frame loop starts.
        self.liveness.frame(self.clock())

    def write(self, frame: Frame, decision: Decision) -> None:
        runner = self._run
        now = self.clock()
        first = self._frames == 0
        self._running = runner.bundle  # it produced this decision: now it "really classifies"
        self._frames += 1
        self.liveness.frame(now)
        if first:  # the outputs before this one have the result: "ready" means results are flowing
            log.info("ready: first frame classified with %s", runner.bundle.name)
            self._status = self._status_text(runner)
            if self._ready:  # READY=1 went out while the camera was awaited
                systemd.status(self._status)
            else:
                self._ready = True
                systemd.ready(self._status)
            self._next_status = now + STATUS_INTERVAL
        self._tick(runner, now)

    def idle(self) -> None:
        runner = self._run
        now = self.clock()
        stats = runner.grabber_stats()
        if stats is not None:
            self.liveness.observe(stats, now)
            if stats.is_stalled:
                self.last_error = redact(stats.last_error) if stats.last_error else None
                if self._frames == 0 and not self._ready and not self._stopping:
                    # A camera absent at boot: start-up is over, waiting is the job now.
                    self._status = self._status_text(runner)
                    log.warning("%s", self._status)
                    self._ready = True
                    systemd.ready(self._status)
                    self._next_status = now + STATUS_INTERVAL
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
        self.last_error = redact(message)
        self._status = f"failed: {self.last_error}"
        systemd.status(self._status)
        self._write_state_quietly()

    # -- the periodic work ---------------------------------------------------------

    def _tick(self, runner: Runner, now: float) -> None:
        if self._stopping:
            return
        # systemd arms the watchdog at READY=1; start-up has TimeoutStartSec instead.
        if self._ready and self.watchdog.due(self._last_ping, now):
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
            self._status = self._status_text(runner)
            systemd.status(self._status)
        if self.state_file is not None and now >= self._next_state:
            self._next_state = now + self.state_interval
            self._write_state_quietly()
        if self.reloader is not None:
            self._reload_step(runner)

    def _status_text(self, runner: Runner) -> str:
        stats = runner.grabber_stats()
        if stats is not None and stats.is_stalled:
            error = redact(stats.last_error) if stats.last_error else "no frame yet"
            if self._frames == 0:
                give_up = runner.source.give_up_after
                until = f"giving up after {give_up:g} s" if give_up else "until it appears"
                return f"waiting for camera: {error}; retrying, {until}"
            return f"no frames: {error}; reopening ({stats.reopens} reopens)"
        if stats is not None and stats.only_blank_for is not None:
            return (f"only blank frames for {stats.only_blank_for:.0f} s (dark scene or covered lens; "
                    f"{stats.blank_skipped} skipped, not classified)")
        st = runner.stats
        fps = "" if st.fps is None else f"{st.fps:.1f} fps, "
        name = f", bundle {self._running.name}" if self._running is not None else ""
        label = "" if st.label is None else f"{st.label} ({st.score:.2f})"
        return f"{fps}{label}{name}"

    # -- the run's status hook -------------------------------------------------------

    def status(self) -> dict:
        """The keys only the service knows (see :mod:`.state` for all of them)."""
        return {"pid": os.getpid(), "status": self._status, "last_error": self.last_error,
                "edgetpu_setting": self.edgetpu_setting}

    def healthy(self, now: float) -> bool:
        return self.liveness.healthy(now)

    def state(self) -> dict:
        """The state file's content now: the run's status with this hook's keys."""
        if self._run is not None:
            return self._run.status()
        # Before the run starts (waiting for a bundle): nothing classified yet.
        return {"started_at": round(self.started_at, 3), "fps": None, "label": None, "frames": 0,
                "dropped": 0, "reopens": 0, "bundle_name": None, "bundle_path": None, "model": None,
                "backend": None, "interpreter": None, "source": None, "resolution": None, **self.status()}

    def _write_state(self) -> None:
        write_state(self.state_file, self.state())

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
        error = outcome.error
        if error is None:
            try:
                status = self.apply_reload(runner, outcome.value) if self.apply_reload else "reloaded"
            except EdgeclassError as exc:
                error = str(exc)
            except Exception as exc:  # an output that refused to start: still "nothing changed"
                log.debug("applying the reload failed", exc_info=True)
                error = f"{type(exc).__name__}: {exc}"
            else:
                self.last_error = None
                self._status = status
                systemd.ready(status)
                self._next_status = self.clock() + STATUS_INTERVAL
                self._write_state_quietly()
                return
        error = redact(error)
        self.last_error = f"reload failed: {error}"
        log.error("reload failed, still running %s (%s): %s", runner.bundle.name, runner.bundle.path, error)
        self._status = f"reload failed, still running {runner.bundle.name}: {error}"
        systemd.ready(self._status)
        self._next_status = self.clock() + STATUS_INTERVAL
        self._write_state_quietly()

"""The capture thread: frames arrive in the background, fresh, and keep arriving.

:class:`FrameGrabber` reads a :class:`~edgeclass.device.sources.FrameSource` in
a daemon thread and hands frames to the inference loop through :meth:`get`:

- live sources (cameras, streams) keep only the newest frame, so a slow model
  never works through a backlog; older frames are dropped and counted;
- files and folders deliver every frame in order through a queue of two, the
  reader blocking when it is full (no backlog growth);
- preprocessing runs in the capture thread, so it overlaps inference;
- blank frames (a uniform black or grey picture: a covered lens, a pitch-dark
  scene, a failing camera) are skipped and counted, never classified; by
  default they still prove that the camera works (a dark scene at night is
  not a fault), unless ``blank_is_stall``;
- a camera whose pictures are byte-identical for ``frozen_after`` seconds has
  frozen (sensor noise makes that impossible for a working one): the repeats
  are skipped, then it is treated as stalled; files and folders are exempt;
- a source that blocks in ``read()`` for ``stall_timeout`` (the clock starts
  once the source has opened: a camera or stream that is slow to open is not
  a stall of frames; ``open()`` has ``open_timeout`` of its own), or (if live)
  sends only blank frames that long, or that fails, is reported and
  replaced by a fresh one from ``make_source`` after an exponential backoff;
  frames are never invented and frames from before a reopen are never handed
  out after it; a file or folder reopened mid-way resumes after the last frame
  read, so no frame is classified twice; after ``give_up_after`` seconds
  without a good frame :meth:`get` raises :class:`SourceError`, so a service
  exits non-zero and systemd restarts it.

Threads: one supervisor (stall clock, backoff, give-up) and one reader per
opened source (a "generation"). A read blocked inside a driver or FFmpeg
cannot be interrupted safely from Python (releasing an OpenCV capture from
another thread while it reads can crash), so a stalled reader is *abandoned*:
it closes its own source as soon as the call returns, and a fresh source is
opened beside it. At most :data:`MAX_ABANDONED` such threads may linger; past
that no new source is opened until one finishes, which bounds threads and file
descriptors even on a camera that hangs forever (give-up still applies).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from ..errors import SourceError, SourceMissing
from .sources import Frame, FrameSource, redact

log = logging.getLogger(__name__)

BLANK_STD = 1.0  # a real scene, even a dark one, has sensor noise above this
# FFmpeg gives a network camera 10 s to answer, picamera2 a few seconds to
# start the sensor; an open that takes longer than this is hung in the driver.
OPEN_TIMEOUT = 30.0
MAX_ABANDONED = 4
QUEUE_DEPTH = 2  # non-live: enough to overlap decode with inference, no more


class Captured(NamedTuple):
    """A frame and, when the grabber has a preprocess function, its input tensor."""

    frame: Frame
    tensor: np.ndarray | None


@dataclass(frozen=True)
class GrabberStats:
    """Counters since the grabber started (a snapshot)."""

    source: str  # description of the current (or last) source
    live: bool | None  # None until a source object exists
    frames_read: int  # every frame the source produced, blank or not
    delivered: int  # frames returned by get()
    dropped: int  # live frames replaced by a newer one before get() took them
    blank_skipped: int
    reopens: int
    last_error: str | None
    is_stalled: bool  # no good frame since a stall or failure was detected
    seconds_since_frame: float | None  # since the last good frame; None before the first
    # Abandoned readers still blocked in the driver. While one is, it holds the
    # device, so opening it again is futile: only ending the process frees it.
    stuck_readers: int = 0
    repeats_skipped: int = 0  # frames byte-identical to the camera's previous picture
    only_blank_for: float | None = None  # seconds the frames have all been blank; None when the last was not


def is_blank(rgb: np.ndarray) -> bool:
    """True for a uniform frame (all black, all grey): a covered lens, a pitch-dark scene, a dead camera."""
    # Every 8th pixel each way: ~20 µs on 640x480, plenty to see any real scene.
    return float(rgb[::8, ::8].std()) < BLANK_STD


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two frames are byte-identical (what a frozen camera or driver repeats).

    A strided sample is compared first: sensor noise makes nearly every pixel of
    two real frames differ, so a working camera's frames are told apart by the
    sample alone; only an identical sample pays for the full comparison.
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not np.array_equal(a[::16, ::16], b[::16, ::16]):
        return False
    return bool(np.array_equal(a, b))


class _Generation:
    """One source object and the thread reading it."""

    def __init__(self, number: int, base_index: int, now: float) -> None:
        self.number = number
        self.base = base_index  # frame indices continue across reopens
        self.thread: threading.Thread | None = None
        self.live: bool | None = None
        self.opened = False
        self.abandoned = False  # set by the supervisor or close(); the thread exits at its next check
        self.started = now  # make_source() and open() began
        self.busy_since: float | None = None  # in read() since then (None: opening, or between reads)
        self.blank_since: float | None = None
        self.from_sensor = False  # frames come from a camera: repeats mean it froze
        self.repeating = False  # its latest frame repeated the previous picture
        self.outcome: str | None = None  # "ended" or "failed"
        self.error: str | None = None
        self.missing = False  # failed because the source does not exist (yet)


class FrameGrabber:
    """Reads a frame source in a background thread; :meth:`get` returns fresh frames.

    ``make_source`` is called for the first source and again for every reopen
    (for example ``lambda: open_source(spec)``); it must return a new, unopened
    source each time. ``retry_first_open``: whether a failure to open the very
    first source is retried (with backoff, until ``give_up_after``) or raised at
    once by :meth:`get`; ``None`` retries live sources (a camera may still be
    starting at boot) and sources that do not exist yet
    (:class:`~edgeclass.device.errors.SourceMissing`: a ``/dev/v4l/by-id`` link
    udev has not made, a share not mounted), and fails fast on files and
    folders that exist but cannot be read (they will not fix themselves).
    ``open_timeout``: how long ``make_source()`` plus ``open()`` may take before
    the source counts as hung (default: the larger of :data:`OPEN_TIMEOUT` and
    ``stall_timeout``); ``stall_timeout`` only starts once it has opened.
    """

    def __init__(
        self,
        make_source: Callable[[], FrameSource],
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        *,
        stall_timeout: float = 5.0,
        open_timeout: float | None = None,
        reopen_backoff: tuple[float, float] = (0.5, 30.0),
        give_up_after: float | None = 300.0,
        skip_blank: bool = True,
        blank_is_stall: bool = False,
        frozen_after: float | None = 10.0,
        retry_first_open: bool | None = None,
        name: str = "edgeclass-capture",
    ) -> None:
        low, high = reopen_backoff
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be > 0, got {stall_timeout}")
        if not 0 < low <= high:
            raise ValueError(f"reopen_backoff must be (min, max) with 0 < min <= max, got {reopen_backoff}")
        if give_up_after is not None and not give_up_after > 0:
            raise ValueError(f"give_up_after must be > 0 or None, got {give_up_after}")
        self._make_source = make_source
        self.stall_timeout = float(stall_timeout)
        self.open_timeout = max(OPEN_TIMEOUT, self.stall_timeout) if open_timeout is None else float(open_timeout)
        self.reopen_backoff = (float(low), float(high))
        self.give_up_after = give_up_after
        self.skip_blank = skip_blank
        self.blank_is_stall = blank_is_stall
        self.frozen_after = frozen_after if frozen_after else None  # 0 or None: never
        self.retry_first_open = retry_first_open
        self.name = name
        # One lock, three wait queues: consumers wait for frames, the non-live
        # reader waits for space, the supervisor waits for events. Separate
        # conditions so a frame does not wake the supervisor and vice versa.
        # Re-entrant so close() can run in a signal handler (SIGTERM) that
        # interrupts the main thread inside get().
        self._lock = threading.RLock()
        self._frames = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._events = threading.Condition(self._lock)
        self._queue: deque[tuple[Captured, int]] = deque()
        self._preprocess = preprocess
        self._preprocess_version = 0
        self._supervisor: threading.Thread | None = None
        self._gen: _Generation | None = None
        self._abandoned: list[_Generation] = []
        self._gen_count = 0
        self._next_base = 0
        self._resume_at: object | None = None  # where a fresh file/folder source continues (never frame 0 again)
        self._last_returned = -1
        self._description = "frame source (not opened yet)"
        self._live: bool | None = None
        self._read = self._delivered = self._dropped = self._blank = self._reopens = 0
        self._last_error: str | None = None
        self._trouble_since: float | None = None  # first stall/failure since the last good frame
        self._failures = 0  # consecutive, for the backoff
        self._next_open_at = 0.0
        self._started_at: float | None = None
        self._last_good: float | None = None  # last frame worth classifying
        self._last_alive: float | None = None  # last frame proving the source works (good, or blank)
        self._blank_run_since: float | None = None
        self._repeats = 0
        self._last_picture: np.ndarray | None = None  # the camera's previous (non-blank) picture
        self._picture_since = 0.0  # when that picture first arrived
        self._ever_opened = False
        self._ended = False
        self._failed: str | None = None
        self._fatal: BaseException | None = None
        self._closing = False
        self._warned_abandoned = False

    # -- public API ---------------------------------------------------------------

    def start(self) -> "FrameGrabber":
        """Start the capture thread (done by ``with`` and by the first :meth:`get`)."""
        with self._lock:
            if self._supervisor is not None or self._closing:
                return self
            self._started_at = time.monotonic()
            self._supervisor = threading.Thread(target=self._supervise, name=self.name, daemon=True)
            self._supervisor.start()
        return self

    def __enter__(self) -> "FrameGrabber":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def get(self, timeout: float | None = None) -> Captured | None:
        """The next frame newer than the last one returned.

        Frame indices keep increasing across reopens (the grabber offsets each new
        source's indices past the last frame read), so they identify frames uniquely.

        ``None`` when a file or folder has ended or the grabber was closed;
        :class:`SourceError` once the source has failed for good;
        :class:`TimeoutError` when ``timeout`` seconds pass without a new frame
        (the grabber keeps trying to recover meanwhile).
        """
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                item = self._pop()
                if item is not None:
                    captured, redo, preprocess = item
                    break
                if self._fatal is not None:
                    raise self._fatal
                if self._failed is not None:
                    raise SourceError(self._failed)
                if self._ended or self._closing:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{self._description}: no new frame within {timeout:g} s")
                self._frames.wait(remaining)
        if redo:  # queued before set_preprocess(): redo with the new function
            captured = captured._replace(tensor=None if preprocess is None else preprocess(captured.frame.rgb))
        return captured

    def set_preprocess(self, preprocess: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """Use a new preprocess function from now on (for a hot model reload).

        Frames already queued are preprocessed again by :meth:`get`, so no tensor
        of the old shape reaches the new model.
        """
        with self._lock:
            self._preprocess = preprocess
            self._preprocess_version += 1

    @property
    def stats(self) -> GrabberStats:
        with self._lock:
            since = None if self._last_good is None else time.monotonic() - self._last_good
            return GrabberStats(
                source=self._description,
                live=self._live,
                frames_read=self._read,
                delivered=self._delivered,
                dropped=self._dropped,
                blank_skipped=self._blank,
                reopens=self._reopens,
                last_error=self._last_error,
                is_stalled=self._trouble_since is not None,
                seconds_since_frame=since,
                stuck_readers=sum(1 for g in self._abandoned if g.thread is not None and g.thread.is_alive()),
                repeats_skipped=self._repeats,
                only_blank_for=None if self._blank_run_since is None else time.monotonic() - self._blank_run_since,
            )

    @property
    def description(self) -> str:
        return self._description

    @property
    def live(self) -> bool | None:
        """Whether the source is live; ``None`` until the first source object exists."""
        return self._live

    def close(self, timeout: float = 1.0) -> None:
        """Stop capturing and release the source; returns within about ``timeout`` s.

        A reader blocked inside ``read()`` is left behind as a daemon thread; it
        closes its source as soon as that call returns.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            generations = [g for g in (self._gen, *self._abandoned) if g is not None]
            for gen in generations:
                gen.abandoned = True
            self._queue.clear()
            for cond in (self._frames, self._space, self._events):
                cond.notify_all()
            supervisor = self._supervisor
        deadline = time.monotonic() + timeout
        for thread in [supervisor] + [g.thread for g in generations]:
            if thread is not None and thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [g for g in generations if g.thread is not None and g.thread.is_alive()]
        if stuck:
            log.warning(
                "%s: capture thread still blocked in the source after %.1f s; leaving it behind, "
                "it releases the source when the call returns", self._description, timeout,
            )  # fmt: skip

    # -- consumer side (lock held) ------------------------------------------------

    def _pop(self):
        while True:
            try:
                captured, version = self._queue.popleft()
            except IndexError:  # empty (or emptied by close() from a signal handler)
                return None
            self._space.notify()
            if captured.frame.index <= self._last_returned:  # never the same or an older frame
                continue
            self._last_returned = captured.frame.index
            self._delivered += 1
            return captured, version != self._preprocess_version, self._preprocess

    # -- supervisor thread --------------------------------------------------------

    def _supervise(self) -> None:
        poll = min(1.0, max(0.02, self.stall_timeout / 4))
        with self._lock:
            while not self._closing:
                wait = self._step(time.monotonic(), poll)
                if wait is None:
                    break
                self._events.wait(wait)
            if self._gen is not None:  # ended, failed or closed: let the reader go
                self._gen.abandoned = True
                self._space.notify_all()
            self._frames.notify_all()

    def _step(self, now: float, poll: float) -> float | None:
        """One supervisor decision; returns how long to sleep, ``None`` to stop."""
        gen = self._gen
        if self._fatal is not None:
            return None
        if gen is not None:
            if gen.outcome == "ended":
                self._ended = True
                return None
            why = gen.error if gen.outcome == "failed" else self._stall_reason(gen, now)
            if why is not None:
                stalled = gen.outcome is None
                if stalled:
                    gen.abandoned = True
                    self._abandoned.append(gen)
                    self._space.notify_all()
                self._gen = None
                self._after_failure(gen, why, now, stalled)
                if self._failed is not None:
                    return None
        last_good = self._last_alive if self._last_alive is not None else self._started_at
        if (
            self._trouble_since is not None
            and self.give_up_after is not None
            and now - last_good >= self.give_up_after
        ):
            self._failed = (
                f"{self._description}: no good frame for {now - last_good:.0f} s, giving up "
                f"(last error: {self._last_error})"
            )
            return None
        if self._gen is None:
            self._abandoned = [g for g in self._abandoned if g.thread is not None and g.thread.is_alive()]
            if len(self._abandoned) >= MAX_ABANDONED:
                if not self._warned_abandoned:
                    self._warned_abandoned = True
                    log.warning(
                        "%s: %d capture threads are still blocked in the driver; waiting for one "
                        "to return before opening the source again", self._description, len(self._abandoned),
                    )  # fmt: skip
                return poll
            if now >= self._next_open_at:
                self._start_generation(now)
            else:
                return min(poll, self._next_open_at - now)
        return poll

    def _stall_reason(self, gen: _Generation, now: float) -> str | None:
        if not gen.opened:
            if now - gen.started >= self.open_timeout:
                return f"{self._description}: open did not complete in {now - gen.started:.1f} s (blocked in the source)"
            return None
        if gen.busy_since is not None and now - gen.busy_since >= self.stall_timeout:
            return f"{self._description}: no frame for {now - gen.busy_since:.1f} s (blocked in the source)"
        if gen.blank_since is not None and now - gen.blank_since >= self.stall_timeout:
            return f"{self._description}: only blank frames for {now - gen.blank_since:.1f} s (blank_is_stall)"
        if gen.repeating and self.frozen_after is not None and now - self._picture_since >= self.frozen_after:
            return (f"{self._description}: frozen: the same picture, byte for byte, for "
                    f"{now - self._picture_since:.1f} s (the camera or its driver repeats its last frame)")
        return None

    def _after_failure(self, gen: _Generation, why: str, now: float, stalled: bool) -> None:
        self._last_error = why
        if gen.live and self._queue:  # stale by now: never hand them out after the reopen
            self._dropped += len(self._queue)
            self._queue.clear()
        first = self._trouble_since is None
        if first:
            self._trouble_since = now
        retry_first = self.retry_first_open if self.retry_first_open is not None else bool(gen.live) or gen.missing
        if not self._ever_opened and not stalled and not retry_first:
            self._failed = why
            return
        self._failures += 1
        low, high = self.reopen_backoff
        delay = min(high, low * 2 ** min(self._failures - 1, 30))
        self._next_open_at = now + delay
        # Once per episode at WARNING; the retries of the same episode at INFO.
        log.log(logging.WARNING if first else logging.INFO, "%s; reopening in %.1f s", why, delay)

    def _start_generation(self, now: float) -> None:
        self._gen_count += 1
        if self._gen_count > 1:
            self._reopens += 1
        gen = _Generation(self._gen_count, self._next_base, now)
        gen.thread = threading.Thread(
            target=self._read_loop, args=(gen,), name=f"{self.name}-{gen.number}", daemon=True
        )
        self._gen = gen
        gen.thread.start()

    # -- reader threads -----------------------------------------------------------

    def _read_loop(self, gen: _Generation) -> None:
        source: FrameSource | None = None
        try:
            source = self._make_source()
            with self._lock:
                gen.live = bool(source.live)
                gen.from_sensor = bool(source.from_sensor)
                self._live = gen.live
                if not self._ever_opened:
                    self._description = source.description
            source.open()
            with self._lock:
                resume_at = self._resume_at
            if resume_at is not None:  # a file or folder replaced mid-way: what was read stays read
                source.resume(resume_at)
            with self._lock:
                if gen.abandoned:
                    return
                gen.opened = True
                self._description = source.description
                first = not self._ever_opened
                self._ever_opened = True
            log.info("%s %s", "opened" if first else "reopened", source.description)
            while True:
                with self._lock:
                    if gen.abandoned:
                        return
                    gen.busy_since = time.monotonic()
                frame = source.read()
                if frame is None:  # a clean end (cameras raise instead): a file played in real time
                    self._finish(gen, "ended")
                    return
                if not self._take(gen, frame, source.position()):
                    return
        except SourceError as exc:
            gen.missing = isinstance(exc, SourceMissing)
            self._finish(gen, "failed", str(exc))
        except Exception as exc:  # cv2.error, OSError from a driver...: a source failure too
            name = source.description if source is not None else self._description
            self._finish(gen, "failed", f"{name}: {type(exc).__name__}: {exc}")
        finally:
            if source is not None:
                try:
                    source.close()
                except Exception as exc:  # the next source must still open
                    log.debug("%s: close failed: %s", source.description, redact(str(exc)))

    def _take(self, gen: _Generation, frame: Frame, position: object | None = None) -> bool:
        """Count, filter, preprocess and queue one frame; False when the reader must stop.

        ``position``: the source's :meth:`~FrameSource.position` after this frame.
        """
        frame = frame._replace(index=gen.base + frame.index)
        # Outside the lock: the checks read pixels. Uniform frames are exempt from
        # the frozen check: a pitch-dark scene is uniform, and so byte-identical.
        blank = is_blank(frame.rgb)
        watch = gen.from_sensor and self.frozen_after is not None and not blank
        previous = self._last_picture
        repeat = watch and previous is not None and same_picture(frame.rgb, previous)
        with self._lock:
            gen.busy_since = None
            if gen.abandoned:
                return False
            now = time.monotonic()
            self._read += 1
            self._next_base = max(self._next_base, frame.index + 1)
            self._resume_at = position
            gen.repeating = repeat
            if repeat:  # the same picture again: never classified twice, frozen after frozen_after
                self._repeats += 1
                return True
            if watch:
                self._last_picture, self._picture_since = frame.rgb, now
            if blank and self.skip_blank:
                self._blank += 1
                if self._blank_run_since is None:
                    self._blank_run_since = now
                if self.blank_is_stall and gen.live:
                    if gen.blank_since is None:
                        gen.blank_since = now
                else:
                    self._source_works(now, good=False)
                return True
            gen.blank_since = self._blank_run_since = None
            self._source_works(now, good=True)
            preprocess, version = self._preprocess, self._preprocess_version
        try:
            tensor = preprocess(frame.rgb) if preprocess is not None else None
        except Exception as exc:  # a bug or a model/frame mismatch, not a camera fault
            with self._lock:
                self._fatal = exc
                self._frames.notify_all()
                self._events.notify_all()
            return False
        item = (Captured(frame, tensor), version)
        with self._lock:
            if gen.live:
                if self._queue:
                    self._dropped += len(self._queue)
                    self._queue.clear()
            else:
                while len(self._queue) >= QUEUE_DEPTH and not gen.abandoned:
                    self._space.wait()
            if gen.abandoned:
                return False
            self._queue.append(item)
            self._frames.notify()
        return True

    def _source_works(self, now: float, good: bool) -> None:
        """A frame that proves the source works: a good one, or a blank one unless ``blank_is_stall``."""
        if self._trouble_since is not None:
            log.info(
                "%s: frames again after %.1f s (%d reopens so far)%s",
                self._description, now - self._trouble_since, self._reopens,
                "" if good else "; blank so far (dark scene or covered lens)",
            )  # fmt: skip
            self._trouble_since = None
        self._failures = 0
        self._last_alive = now
        if good:
            self._last_good = now

    def _finish(self, gen: _Generation, outcome: str, error: str | None = None) -> None:
        # Driver and FFmpeg errors can quote the URL they were given, password and all.
        error = None if error is None else redact(error)
        with self._lock:
            gen.busy_since = None
            if gen.abandoned:
                if error:
                    log.debug("abandoned reader %d: %s", gen.number, error)
                return
            gen.outcome, gen.error = outcome, error
            self._events.notify_all()

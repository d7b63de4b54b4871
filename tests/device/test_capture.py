"""The capture thread against real faults: stalled named pipes and OS pipes, files
truncated or deleted mid-run, blank frames, cameras that never open, slow consumers.

Timing bounds are deliberately loose (the machine is shared and has 2 cores); the
timeouts passed to the grabber are short so the whole file runs in seconds.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeclass.device.pipeline.capture import QUEUE_DEPTH, FrameGrabber, is_blank, same_picture
from edgeclass.device.errors import SourceError
from edgeclass.device.pipeline.sources import FrameSource, ImageFolder, VideoFile, open_source

from .conftest import write_video as write_bgr_video
from .mjpeg_camera import MJPEGCamera, noisy

FAST = {"reopen_backoff": (0.02, 0.1)}


def textured(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (h, w, 3), np.uint8)


write_video = functools.partial(write_bgr_video, rgb=False)  # these tests build OpenCV BGR frames


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_video(tmp_path / "clip.avi", (textured(i) for i in range(30)))


def drain(grabber: FrameGrabber, limit: int = 10_000, timeout: float = 10.0) -> list:
    out = []
    while len(out) < limit:
        item = grabber.get(timeout=timeout)
        if item is None:
            break
        out.append(item)
    return out


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def settle_threads(baseline: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    return threading.active_count()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class PipeSource(FrameSource):
    """A test source whose read() really blocks on an OS pipe: one byte written, one frame.

    ``hang_up()`` closes the write end, which makes a blocked read return (EOF).
    """

    def __init__(self, live: bool = True, pixels: np.ndarray | None = None) -> None:
        super().__init__()
        self.live = live
        self.description = "test pipe"
        self.pixels = textured(7) if pixels is None else pixels
        self._lock = threading.Lock()
        self.r = self.w = None
        self.closed = threading.Event()

    def open(self) -> None:
        self.r, self.w = os.pipe()

    def feed(self, n: int = 1) -> None:
        os.write(self.w, b"x" * n)

    def hang_up(self) -> None:
        with self._lock:
            if self.w is not None:
                os.close(self.w)
                self.w = None

    def read(self):
        if not os.read(self.r, 1):
            raise SourceError("test pipe: writer hung up")
        return self._frame(self.pixels.copy())

    def close(self) -> None:
        self.hang_up()
        with self._lock:
            if self.r is not None:
                os.close(self.r)
                self.r = None
        self.closed.set()


class Factory:
    """make_source that remembers every source it made."""

    def __init__(self, make):
        self.make = make
        self.made: list[FrameSource] = []

    def __call__(self):
        source = self.make()
        self.made.append(source)
        return source


# -- delivery semantics ---------------------------------------------------------


def test_file_delivers_every_frame_in_order_with_tensors_and_no_backlog(clip):
    calls = []

    def preprocess(rgb):
        calls.append(threading.current_thread().name)
        return rgb[::2, ::2].copy()

    with FrameGrabber(lambda: open_source(clip), preprocess) as grabber:
        first = grabber.get(timeout=10)
        time.sleep(0.3)  # a slow consumer: the reader must wait, not pile frames up
        assert grabber.stats.frames_read - grabber.stats.delivered <= QUEUE_DEPTH + 1
        rest = drain(grabber)
        assert grabber.get() is None  # stays ended
        stats = grabber.stats
    items = [first] + rest
    assert [c.frame.index for c in items] == list(range(30))
    assert all(c.tensor.shape == (24, 32, 3) for c in items)
    assert np.array_equal(items[5].tensor, items[5].frame.rgb[::2, ::2])
    assert all(name != threading.current_thread().name for name in calls)  # overlaps inference
    assert (stats.delivered, stats.dropped, stats.reopens, stats.live) == (30, 0, 0, False)


def test_live_source_under_slow_consumer_drops_old_frames_and_serves_recent_ones(clip):
    # A file paced at 100 fps is a live source: a camera we can reproduce exactly.
    make = lambda: open_source(clip, loop=True, realtime=True, fps=100)  # noqa: E731
    with FrameGrabber(make) as grabber:
        got = []
        for _ in range(8):
            time.sleep(0.1)  # "inference" ten times slower than the camera
            captured = grabber.get(timeout=5)
            got.append((captured.frame.index, time.time() - captured.frame.timestamp))
        stats = grabber.stats
    indices = [i for i, _ in got]
    assert indices == sorted(set(indices))  # increasing, never repeated
    assert max(b - a for a, b in zip(indices, indices[1:])) > 2  # old frames were skipped
    assert stats.dropped > 10 and stats.live is True
    assert max(age for _, age in got) < 0.5  # the newest frame, not one from a backlog


def test_file_played_in_real_time_is_live_and_still_ends(clip):
    with FrameGrabber(lambda: open_source(clip, realtime=True, fps=300)) as grabber:
        items = drain(grabber)
        assert grabber.live is True and grabber.stats.reopens == 0
    assert 0 < len(items) <= 30 and [c.frame.index for c in items] == sorted(c.frame.index for c in items)


def test_get_never_returns_the_same_frame_twice():
    source = PipeSource()
    with FrameGrabber(lambda: source) as grabber:
        wait_for(lambda: source.w is not None, what="open")
        source.feed(1)
        first = grabber.get(timeout=5)
        with pytest.raises(TimeoutError, match="test pipe"):
            grabber.get(timeout=0.2)  # nothing new: wait, do not repeat
        source.feed(1)
        second = grabber.get(timeout=5)
        source.hang_up()
    assert second.frame.index == first.frame.index + 1


def test_blank_frames_are_skipped_and_counted(tmp_path):
    frames = []
    for i in range(12):
        frames.append(textured(i) if i % 3 == 0 else np.full((48, 64, 3), 0 if i % 2 else 128, np.uint8))
    path = write_video(tmp_path / "blanks.avi", frames)
    with FrameGrabber(lambda: open_source(path)) as grabber:
        items = drain(grabber)
        stats = grabber.stats
    assert [c.frame.index for c in items] == [0, 3, 6, 9]
    assert stats.blank_skipped == 8 and stats.reopens == 0
    assert not any(is_blank(c.frame.rgb) for c in items)


def test_blank_frames_are_delivered_when_skip_blank_is_off(tmp_path):
    path = write_video(tmp_path / "black.avi", [np.zeros((48, 64, 3), np.uint8)] * 4)
    with FrameGrabber(lambda: open_source(path), skip_blank=False) as grabber:
        assert len(drain(grabber)) == 4


def test_set_preprocess_applies_to_queued_frames(clip):
    with FrameGrabber(lambda: open_source(clip), lambda rgb: rgb[:1]) as grabber:
        assert grabber.get(timeout=5).tensor.shape == (1, 64, 3)
        wait_for(lambda: grabber.stats.frames_read >= 3, what="queue to fill")
        grabber.set_preprocess(lambda rgb: rgb[:2])
        assert all(c.tensor.shape == (2, 64, 3) for c in drain(grabber))


def test_preprocess_error_reaches_the_consumer(clip):
    def broken(rgb):
        raise ValueError("tensor shape mismatch")

    with FrameGrabber(lambda: open_source(clip), broken) as grabber:
        with pytest.raises(ValueError, match="shape mismatch"):
            grabber.get(timeout=5)


# -- failing to open ------------------------------------------------------------


def test_unreadable_file_fails_fast_naming_it(tmp_path):
    bad = tmp_path / "garbage.avi"
    bad.write_bytes(os.urandom(3000))
    start = time.monotonic()
    with FrameGrabber(lambda: open_source(bad)) as grabber:
        with pytest.raises(SourceError, match="garbage.avi"):
            grabber.get(timeout=10)
    assert time.monotonic() - start < 5
    # Not waiting for the source: a missing one fails at once too.
    with FrameGrabber(lambda: open_source(tmp_path / "missing.avi"), retry_first_open=False) as grabber:
        with pytest.raises(SourceError, match="missing.avi"):
            grabber.get(timeout=10)


def test_symlink_source_absent_at_start_is_waited_for_until_it_appears(tmp_path, clip):
    """A stable camera name is a link that appears when the device does: a real symlink, made 0.5 s late."""
    link = tmp_path / "v4l" / "by-id" / "usb-Test_Camera-video-index0"

    def plug_in() -> None:
        time.sleep(0.5)
        link.parent.mkdir(parents=True)
        link.symlink_to(clip)

    threading.Thread(target=plug_in, daemon=True).start()
    factory = Factory(lambda: open_source(link))
    with FrameGrabber(factory, give_up_after=30, reopen_backoff=(0.05, 0.2)) as grabber:
        items = drain(grabber)
        stats = grabber.stats
    assert [c.frame.index for c in items] == list(range(30))
    assert stats.reopens >= 1 and len(factory.made) == 1  # tried while absent, made once it appeared
    assert "no such file or folder" in stats.last_error and "usb-Test_Camera" in stats.last_error


def test_missing_source_is_given_up_after_give_up_after_when_waited_for(tmp_path):
    start = time.monotonic()
    with FrameGrabber(lambda: open_source(tmp_path / "never"), give_up_after=0.6, **FAST) as grabber:
        with pytest.raises(SourceError, match=r"giving up.*never.*no such file or folder"):
            grabber.get(timeout=10)
        assert grabber.stats.reopens >= 2
    assert 0.5 < time.monotonic() - start < 6


def test_missing_camera_is_retried_with_backoff_then_given_up(caplog):
    factory = Factory(lambda: open_source("/dev/video97"))
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="edgeclass.device.pipeline.capture"):
        with FrameGrabber(factory, give_up_after=0.8, reopen_backoff=(0.05, 0.2)) as grabber:
            with pytest.raises(SourceError, match=r"/dev/video97.*giving up.*no such device"):
                grabber.get(timeout=10)
            stats = grabber.stats
    took = time.monotonic() - start
    assert 0.7 < took < 6
    assert 3 <= len(factory.made) <= 12 and stats.reopens == len(factory.made) - 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "video97" in warnings[0].message  # once, retries at INFO


# -- stalls, failures, recovery -------------------------------------------------


def test_named_pipe_that_stalls_is_detected_and_reopened(tmp_path, clip, caplog):
    """A real FIFO carrying a real video: the writer stops mid-file, OpenCV's read blocks."""
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    data = clip.read_bytes()
    gate = threading.Event()  # the second source opens only when the test is ready
    writers: list[int] = []
    made: list[VideoFile] = []

    def make():
        if made:
            assert gate.wait(10)
        made.append(open_source(fifo))
        return made[-1]

    def write(chunk: bytes, close: bool) -> None:
        fd = os.open(fifo, os.O_WRONLY)  # blocks until the grabber opens the FIFO
        writers.append(fd)
        os.write(fd, chunk)
        if close:
            os.close(fd)

    first_writer = threading.Thread(target=write, args=(data[: len(data) * 2 // 3], False), daemon=True)
    first_writer.start()
    baseline = threading.active_count()
    with caplog.at_level(logging.INFO, logger="edgeclass.device.pipeline.capture"):
        grabber = FrameGrabber(make, stall_timeout=0.5, **FAST)
        with grabber:
            before = []
            deadline = time.monotonic() + 10
            while not grabber.stats.is_stalled and time.monotonic() < deadline:
                try:
                    before.append(grabber.get(timeout=0.05))
                except TimeoutError:
                    pass
            assert 5 < len(before) < 30 and "no frame for" in grabber.stats.last_error
            os.close(writers[0])  # the abandoned reader gets EOF and releases its capture...
            # ...which must happen before the next writer: a FIFO shares data between readers.
            wait_for(lambda: made[0]._cap is None, what="abandoned reader to close")
            threading.Thread(target=write, args=(data, True), daemon=True).start()
            gate.set()
            after = drain(grabber)
            stats = grabber.stats
    indices = [c.frame.index for c in before + after]
    assert indices == sorted(set(indices))
    assert len(after) == 30 and after[0].frame.timestamp > before[-1].frame.timestamp
    assert stats.reopens >= 1 and not stats.is_stalled
    stall_warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "no frame for" in r.message]
    assert len(stall_warnings) == 1 and "camera.fifo" in stall_warnings[0].message
    assert settle_threads(baseline) <= baseline


def test_stalled_live_source_is_reopened_and_stale_frames_are_not_served():
    factory = Factory(PipeSource)
    with FrameGrabber(factory, stall_timeout=0.3, **FAST) as grabber:
        wait_for(lambda: factory.made and factory.made[0].w is not None, what="open")
        factory.made[0].feed(3)
        wait_for(lambda: grabber.stats.frames_read == 3, what="three frames")
        stalled_at = time.time()
        # Nobody took frame 2; the source now stalls. After the reopen it must not come out.
        wait_for(lambda: len(factory.made) >= 2 and factory.made[1].w is not None, what="reopen")
        factory.made[1].feed(1)
        fresh = grabber.get(timeout=5)
        assert fresh.frame.index >= 3 and fresh.frame.timestamp > stalled_at
        factory.made[0].hang_up()  # the abandoned reader wakes up and closes its source
        assert factory.made[0].closed.wait(5)
        assert grabber.stats.reopens >= 1
        factory.made[1].hang_up()


def test_live_read_errors_trigger_reopen_with_continuing_indices(clip):
    class Flaky(VideoFile):
        """A real video that 'loses the camera' after 4 frames."""

        def read(self):
            if self._next_index >= 4:
                raise SourceError(f"{self.name}: camera unplugged")
            return super().read()

    factory = Factory(lambda: Flaky(clip, realtime=True, fps=200))
    with FrameGrabber(factory, **FAST) as grabber:
        items = [grabber.get(timeout=5) for _ in range(10)]
        stats = grabber.stats
    indices = [c.frame.index for c in items]
    assert indices == sorted(set(indices))
    assert stats.reopens >= 2 and "camera unplugged" in stats.last_error


def test_live_source_sending_only_blank_frames_is_reopened_then_given_up_with_blank_is_stall(tmp_path, caplog):
    black = write_video(tmp_path / "black.avi", [np.zeros((48, 64, 3), np.uint8)] * 10)
    make = lambda: open_source(black, loop=True, realtime=True, fps=100)  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="edgeclass.device.pipeline.capture"):
        with FrameGrabber(make, stall_timeout=0.3, give_up_after=1.2, blank_is_stall=True, **FAST) as grabber:
            with pytest.raises(SourceError, match="giving up.*only blank frames"):
                grabber.get(timeout=10)
            stats = grabber.stats
    assert stats.delivered == 0 and stats.blank_skipped > 20 and stats.reopens >= 1
    assert any("only blank frames" in r.message and "black.avi" in r.message for r in caplog.records)


def test_file_truncated_mid_run_ends_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(1)
    path = write_video(tmp_path / "cut.avi", (rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(30)))
    with caplog.at_level(logging.WARNING):
        with FrameGrabber(lambda: open_source(path)) as grabber:
            head = [grabber.get(timeout=5) for _ in range(2)]  # the reader is at most 2 frames ahead
            os.truncate(path, path.stat().st_size // 3)
            rest = drain(grabber)
    assert 2 <= len(head + rest) < 20
    assert any("cut.avi" in r.message and "ended after" in r.message for r in caplog.records)


def test_file_deleted_mid_run(clip):
    # Without loop: the open file plays to its end (Unix keeps the inode), then None.
    with FrameGrabber(lambda: open_source(clip)) as grabber:
        head = [grabber.get(timeout=5) for _ in range(3)]
        clip_copy = clip.read_bytes()
        clip.unlink()
        assert len(head + drain(grabber)) == 30
    # With loop: the replay cannot reopen it; retries fail until the give-up period ends.
    clip.write_bytes(clip_copy)
    with FrameGrabber(lambda: open_source(clip, loop=True), give_up_after=0.5, **FAST) as grabber:
        grabber.get(timeout=5)
        clip.unlink()
        with pytest.raises(SourceError, match=r"clip\.avi.*giving up.*no such file"):
            drain(grabber)


# -- shutdown and resources -----------------------------------------------------


def test_close_is_prompt_even_when_read_is_blocked(caplog):
    source = PipeSource()
    baseline = threading.active_count()
    grabber = FrameGrabber(lambda: source, stall_timeout=30).start()
    wait_for(lambda: source.w is not None, what="open")
    source.feed(1)
    assert grabber.get(timeout=5) is not None
    time.sleep(0.1)  # the reader is now blocked in os.read()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="edgeclass.device.pipeline.capture"):
        grabber.close()
    assert time.monotonic() - start < 2.0
    assert grabber.get(timeout=1) is None  # closed: no more frames, no exception
    assert any("still blocked" in r.message for r in caplog.records)
    assert not source.closed.is_set()
    source.hang_up()  # the read returns: the left-behind thread releases the source
    assert source.closed.wait(5)
    assert settle_threads(baseline) <= baseline


def test_close_from_a_signal_handler_ends_a_waiting_get():
    """SIGTERM-style shutdown: a real signal interrupts the main thread blocked in get()."""
    source = PipeSource()
    grabber = FrameGrabber(lambda: source).start()
    previous = signal.signal(signal.SIGALRM, lambda *_: grabber.close())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        start = time.monotonic()
        assert grabber.get(timeout=10) is None
        assert time.monotonic() - start < 3
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        source.hang_up()
    assert source.closed.wait(5)


def test_no_thread_or_fd_growth_over_many_reopens(clip):
    class FailsAfterThree(VideoFile):
        def read(self):
            if self._next_index >= 3:
                raise SourceError(f"{self.name}: lost")
            return super().read()

    # Warm up OpenCV/FFmpeg so their one-off allocations are not counted.
    with open_source(clip) as warm:
        warm.read()
    threads, fds = threading.active_count(), fd_count()

    # Read failures: 25 reopen cycles of a real video capture.
    factory = Factory(lambda: FailsAfterThree(clip, loop=True, realtime=True, fps=500))  # loop: each reopen resumes
    with FrameGrabber(factory, reopen_backoff=(0.001, 0.002)) as grabber:
        wait_for(lambda: grabber.stats.reopens >= 25, timeout=30, what="25 reopens")
        assert grabber.get(timeout=5) is not None

    # Stalls: 6 cycles of a blocked reader abandoned, then released by its writer hanging up.
    pipes = Factory(PipeSource)
    with FrameGrabber(pipes, stall_timeout=0.1, reopen_backoff=(0.001, 0.002)) as grabber:
        for n in range(6):
            wait_for(lambda: len(pipes.made) > n and pipes.made[n].w is not None, what=f"source {n}")
            pipes.made[n].feed(1)
            wait_for(lambda: len(pipes.made) > n + 1, what=f"stall {n}")
            pipes.made[n].hang_up()
        assert grabber.stats.reopens >= 6
    for source in pipes.made:
        source.hang_up()
    assert all(s.closed.wait(5) for s in pipes.made)

    assert settle_threads(threads) == threads
    assert fd_count() == fds


# -- opening --------------------------------------------------------------------


def test_slow_open_is_not_a_stall_of_frames(tmp_path, clip):
    """A real FIFO whose writer turns up 1.2 s late: open() blocks that long, four stall timeouts."""
    fifo = tmp_path / "late.fifo"
    os.mkfifo(fifo)
    data = clip.read_bytes()

    def late_writer() -> None:
        time.sleep(1.2)
        with open(fifo, "wb") as out:
            out.write(data)

    threading.Thread(target=late_writer, daemon=True).start()
    factory = Factory(lambda: open_source(fifo))
    with FrameGrabber(factory, stall_timeout=0.3, **FAST) as grabber:
        items = drain(grabber)
        stats = grabber.stats
    assert [c.frame.index for c in items] == list(range(30))
    assert stats.reopens == 0 and stats.last_error is None and len(factory.made) == 1


def test_open_that_never_completes_is_abandoned_after_the_open_timeout():
    """A driver that hangs in open(): a test source blocked on an event the test releases at the end.

    (Not a FIFO without a writer: OpenCV serialises FFmpeg opens behind one
    process-wide lock, so a hung FFmpeg open would block every later video
    open in this test process too.)
    """
    release = threading.Event()

    class HangsInOpen(PipeSource):
        def open(self) -> None:
            release.wait()
            super().open()

    made = Factory(HangsInOpen)
    start = time.monotonic()
    try:
        with FrameGrabber(made, stall_timeout=0.1, open_timeout=0.6, give_up_after=1.5, **FAST) as grabber:
            with pytest.raises(SourceError, match=r"giving up.*open did not complete in 0\.[6-9]"):
                grabber.get(timeout=10)
            assert grabber.stats.stuck_readers >= 1  # the watchdog's cue: retrying cannot free the device
        assert 1.4 < time.monotonic() - start < 6
    finally:
        release.set()
    assert all(s.closed.wait(5) for s in made.made)  # each abandoned reader closed its own source


# -- dark scenes, blank and frozen cameras ----------------------------------------------


def _watch(grabber: FrameGrabber, seconds: float) -> list:
    """Everything get() hands out for ``seconds`` (a camera has no end); SourceError propagates."""
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.append(grabber.get(timeout=0.1))
        except TimeoutError:
            pass
    return got


def test_long_dark_night_of_noisy_frames_is_classified_and_never_a_stall():
    """A dark scene (pixels 0..13, mean ~6 of 255) from a real MJPEG camera, for 5x stall, give-up and frozen."""
    with MJPEGCamera(lambda i: noisy(14, seed=i), fps=40) as camera:
        with FrameGrabber(lambda: open_source(camera.url), stall_timeout=0.3, give_up_after=0.6,
                          frozen_after=0.3, **FAST) as grabber:
            got = _watch(grabber, 3.0)
            stats = grabber.stats
    assert len(got) > 40 and not any(is_blank(c.frame.rgb) for c in got)
    assert max(c.frame.rgb.mean() for c in got) < 10  # really dark
    assert (stats.reopens, stats.blank_skipped, stats.repeats_skipped, stats.last_error) == (0, 0, 0, None)


def test_long_run_of_truly_uniform_frames_is_skipped_but_never_a_stall_by_default():
    """A pitch-dark scene the camera renders as exact black: uniform *and* byte-identical frames.

    Skipped (never classified) and counted, but the camera delivers on time:
    not reopened, not frozen, not given up, for 5x the give-up period.
    """
    def night(i: int) -> np.ndarray:
        return noisy(14, seed=i) if i < 10 else np.zeros((120, 160, 3), np.uint8)

    with MJPEGCamera(night, fps=40) as camera:
        with FrameGrabber(lambda: open_source(camera.url), stall_timeout=0.3, give_up_after=0.6,
                          frozen_after=0.3, **FAST) as grabber:
            got = _watch(grabber, 3.0)
            stats = grabber.stats
    assert 1 <= len(got) <= 10 and not any(is_blank(c.frame.rgb) for c in got)
    assert stats.blank_skipped > 60 and stats.repeats_skipped == 0
    assert (stats.reopens, stats.last_error, stats.is_stalled) == (0, None, False)
    assert stats.only_blank_for > 2.0


def test_uniform_frames_are_a_stall_when_blank_is_stall_is_set():
    with MJPEGCamera(lambda i: np.zeros((120, 160, 3), np.uint8), fps=40) as camera:
        with FrameGrabber(lambda: open_source(camera.url), stall_timeout=0.3, give_up_after=1.0,
                          blank_is_stall=True, **FAST) as grabber:
            with pytest.raises(SourceError, match=r"giving up.*only blank frames"):
                _watch(grabber, 10.0)
            assert grabber.stats.reopens >= 1


def test_camera_frozen_on_one_picture_is_treated_as_stalled_then_given_up():
    """A real camera stream whose every frame is the same (non-blank) JPEG: decoded, byte-identical."""
    still = noisy(255, seed=3)
    with MJPEGCamera(lambda i: still, fps=40) as camera:
        with FrameGrabber(lambda: open_source(camera.url), stall_timeout=5, frozen_after=0.5, give_up_after=2.0,
                          reopen_backoff=(0.1, 0.2)) as grabber:
            got = []
            with pytest.raises(SourceError, match=r"giving up.*frozen: the same picture, byte for byte"):
                while True:
                    try:
                        got.append(grabber.get(timeout=0.1))
                    except TimeoutError:
                        pass
            stats = grabber.stats
    assert len(got) == 1  # the picture once, never its repeats (not even after a reopen)
    assert stats.repeats_skipped > 30 and stats.reopens >= 1


def test_frozen_check_exempts_files_and_folders(tmp_path):
    """A still shot in a video file repeats legitimately, even played as a live source."""
    still = textured(3)
    path = write_video(tmp_path / "still.avi", [still] * 30)
    with FrameGrabber(lambda: open_source(path, realtime=True, fps=200), frozen_after=0.01) as grabber:
        items = drain(grabber)
        stats = grabber.stats
    assert len(items) > 10 and stats.repeats_skipped == 0 and stats.reopens == 0


def test_same_picture_is_exact():
    a = textured(1, 640, 480)
    b = a.copy()
    assert same_picture(a, b)
    b[479, 639, 2] ^= 1  # one bit off the sampled grid
    assert not same_picture(a, b)
    assert not same_picture(a, a[:, :, ::-1].copy()) and not same_picture(a, a[:240])


# -- reopening a file or folder -----------------------------------------------------


def _pictures(path: Path) -> list[np.ndarray]:
    with open_source(path) as source:
        return [f.rgb for f in iter(source.read, None)]


def fails_once(cls: type, at: int, message: str) -> type:
    """``cls`` (a real source) whose first instance to reach its frame ``at`` raises once, then works."""
    state = {"failed": False}

    class FailsOnce(cls):
        def read(self):
            if self._next_index == at and not state["failed"]:
                state["failed"] = True
                raise SourceError(f"{self.name}: {message}")
            return super().read()

    return FailsOnce


def test_video_reopened_after_a_read_error_never_delivers_a_frame_twice(clip):
    """The file's share drops at frame 12 (once); the fresh source must continue at 13, not at 1."""
    drops_once = fails_once(VideoFile, 12, "Input/output error (network share lost)")
    factory = Factory(lambda: drops_once(clip))
    with FrameGrabber(factory, **FAST) as grabber:
        items = drain(grabber)
        stats = grabber.stats
    expected = _pictures(clip)
    assert stats.reopens == 1 and len(factory.made) == 2
    assert len(items) == len(expected) == 30
    assert all(np.array_equal(c.frame.rgb, picture) for c, picture in zip(items, expected))
    assert [c.frame.index for c in items] == list(range(30))


def test_video_reopened_after_a_stall_never_delivers_a_frame_twice(clip):
    """A read that hangs (an NFS stall) at frame 10 of the first source: abandoned, and the next resumes."""
    release = threading.Event()

    class HangsOnce(VideoFile):
        def read(self):
            if self._next_index == 10 and self is factory.made[0]:
                release.wait()
            return super().read()

    factory = Factory(lambda: HangsOnce(clip))
    try:
        with FrameGrabber(factory, stall_timeout=0.3, **FAST) as grabber:
            items = drain(grabber)
            stats = grabber.stats
    finally:
        release.set()
    expected = _pictures(clip)
    assert stats.reopens == 1 and "no frame for" in stats.last_error
    assert len(items) == 30 and all(np.array_equal(c.frame.rgb, p) for c, p in zip(items, expected))


def test_looping_video_reopened_mid_pass_continues_the_pass(clip):
    drops_once = fails_once(VideoFile, 40, "lost")  # in the second pass, at its frame 10
    with FrameGrabber(lambda: drops_once(clip, loop=True), **FAST) as grabber:
        items = [grabber.get(timeout=5) for _ in range(60)]
    expected = _pictures(clip)
    assert all(np.array_equal(c.frame.rgb, expected[i % 30]) for i, c in enumerate(items))


def test_folder_reopened_after_a_failure_never_delivers_an_image_twice(tmp_path):
    for i in range(8):
        cv2.imwrite(str(tmp_path / f"img{i:02d}.png"), textured(i))

    drops_once = fails_once(ImageFolder, 3, "the USB stick went away")
    with FrameGrabber(lambda: drops_once(tmp_path), **FAST) as grabber:
        items = drain(grabber)
        assert grabber.stats.reopens == 1
    expected = [cv2.cvtColor(textured(i), cv2.COLOR_BGR2RGB) for i in range(8)]
    assert len(items) == 8 and all(np.array_equal(c.frame.rgb, e) for c, e in zip(items, expected))


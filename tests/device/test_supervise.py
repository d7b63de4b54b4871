"""The watchdog policy: feed it while frames flow or the capture thread makes recovery progress, not on a hang."""

from __future__ import annotations

from dataclasses import replace

from edgeclass.device.pipeline.capture import GrabberStats
from edgeclass.device.service.supervise import Liveness

QUIET = GrabberStats(source="cam", live=True, frames_read=10, delivered=10, dropped=0, blank_skipped=0, reopens=0,
                     last_error=None, is_stalled=False, seconds_since_frame=0.0)


def test_frames_keep_it_healthy():
    live = Liveness(grace=10, now=0)
    for t in range(0, 100, 5):
        live.frame(t)
        assert live.healthy(t + 9)
    assert not live.healthy(95 + 11)


def test_recovery_progress_counts_a_frozen_recovery_does_not():
    live = Liveness.for_options(stall_timeout=5, reopen_backoff_max=30, now=0)
    assert live.grace == 40  # a stall is seen after 5 s, the next attempt at most 30 s later, + 5 s slack
    live.frame(0)
    live.observe(QUIET, 1)
    stalled = replace(QUIET, is_stalled=True, last_error="cam: no frame for 5.0 s", reopens=1)
    # An unplugged camera: an attempt (a new reopen or error) every <= 35 s for minutes: always healthy.
    t = 0
    for attempt in range(1, 10):
        t += 35
        live.observe(replace(stalled, reopens=attempt, last_error=f"cam: cannot open ({attempt})"), t)
        assert live.healthy(t + 39)
    # The driver swallowed every reader: nothing changes any more.
    for dt in range(0, 60, 5):
        live.observe(replace(stalled, reopens=9, last_error="cam: cannot open (9)"), t + dt)
    assert live.healthy(t + 40) and not live.healthy(t + 41)


def test_first_observation_is_a_baseline_not_progress():
    live = Liveness(grace=10, now=0)
    live.observe(replace(QUIET, reopens=3, last_error="old"), 20)  # nothing to compare with yet
    assert not live.healthy(20)


def test_failed_reopen_attempts_are_not_progress_while_a_reader_is_stuck():
    """A reader blocked in the driver holds the device: the retries cannot succeed, so they must not feed the watchdog."""
    live = Liveness(grace=10, now=0)
    live.frame(0)
    stuck = replace(QUIET, is_stalled=True, last_error="cam: no frame for 5.0 s", reopens=0, stuck_readers=1)
    live.observe(stuck, 5)
    for attempt in range(1, 20):  # a failed attempt (device busy) every second
        live.observe(replace(stuck, reopens=attempt, last_error=f"cam: cannot open (busy) #{attempt}"), 5 + attempt)
    assert live.healthy(10) and not live.healthy(10.1)
    # The stuck reader returns at last (the driver timed out): retries count again.
    live.observe(replace(stuck, reopens=21, stuck_readers=0), 30)
    assert live.healthy(39)


def test_frames_read_but_not_classified_are_progress():
    """A dark scene at night: the camera delivers blank frames, which are skipped, not classified."""
    live = Liveness(grace=10, now=0)
    live.frame(0)
    live.observe(QUIET, 0)
    for t in range(1, 100):
        live.observe(replace(QUIET, frames_read=10 + 15 * t, blank_skipped=15 * t), t)
        assert live.healthy(t + 9.9)

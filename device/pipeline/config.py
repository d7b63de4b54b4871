"""The pipeline's sections of the configuration: ``[model]``, ``[source]`` and ``[decision]``.

The frame loop takes these dataclasses as they are; ``device.toml``, the
command line and a bundle's defaults fill them in
(:mod:`edgeclass.device.service.config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..settings import boolean, choice, integer, number, path, setting, source


@dataclass(frozen=True)
class ModelConfig:
    """[model]: which bundle runs, and where."""

    bundle: Path = setting(Path("/var/lib/edgeclass/current"), path, "bundle directory (the deploy 'current' symlink)")
    threads: int | None = setting(None, integer(1), "interpreter threads; unset = all cores")
    edgetpu: str = setting("auto", choice("auto", "on", "off"), "use model_edgetpu.tflite when possible")


@dataclass(frozen=True)
class SourceConfig:
    """[source]: the camera and what to do when it misbehaves."""

    source: str = setting("/dev/video0", source, "camera index, /dev/videoN, URL, video file, image folder or picamera2",
                          restart=True)
    width: int | None = setting(None, integer(1), "capture width; unset = the camera's default", restart=True)
    height: int | None = setting(None, integer(1), "capture height", restart=True)
    fps: float | None = setting(None, number(0, low_open=True), "capture frame rate", restart=True)
    stall_timeout: float = setting(5.0, number(0, low_open=True, unit=" seconds"),
                                   "seconds without a frame before reopening", restart=True)
    give_up_after: float = setting(300.0, number(0, unit=" seconds"),
                                   "seconds without a good frame before exiting non-zero; 0 = never", restart=True)
    reopen_backoff_max: float = setting(30.0, number(0, low_open=True, unit=" seconds"),
                                        "longest wait between reopen attempts", restart=True)
    loop: bool = setting(False, boolean, "replay a video file or image folder forever", restart=True)
    realtime: bool = setting(False, boolean, "pace a video file or image folder at its frame rate, like a camera",
                             restart=True)
    wait_for_source: bool = setting(False, boolean, "retry a source that is absent at start instead of failing "
                                    "(always on under the service)", restart=True)
    # A uniform frame has nothing to classify; whether it means trouble depends
    # on the scene: a lit production line never goes black, a garden at night does.
    skip_blank: bool = setting(True, boolean, "never classify blank (uniform black or grey) frames", restart=True)
    blank_is_stall: bool = setting(False, boolean, "a live source sending only blank frames for stall_timeout counts "
                                   "as stalled (reopened, given up); off: a dark scene is not a fault", restart=True)
    frozen_after: float = setting(10.0, number(0, unit=" seconds"), "seconds of byte-identical frames from a camera "
                                  "before it counts as stalled; 0 = never (files and folders are exempt)", restart=True)


@dataclass(frozen=True)
class DecisionConfig:
    """[decision]: from scores to an answer."""

    top_k: int = setting(3, integer(1), "labels per result")
    threshold: float = setting(0.5, number(0, 1), "below this smoothed score the answer is 'unknown'")
    # Weight kept from past frames in the exponential moving average: 0 = no
    # smoothing; 1 would never update, so refused.
    smoothing: float = setting(0.0, number(0, 1, high_open=True), "moving-average weight of past frames, 0 <= s < 1")
    heartbeat: float = setting(10.0, number(0, low_open=True, unit=" seconds"),
                               "seconds between repeats of an unchanged label")

"""Saving uncertain frames: threshold, rate limit, disk cap with oldest-first removal, a layout train can take."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np

from edgeclass.device.pipeline.decide import Decider
from edgeclass.device.pipeline.images import list_images, load_image
from edgeclass.device.pipeline.sources import Frame
from edgeclass.device.outputs.uncertain import UncertainSaver

from .conftest import colour_frame

LABELS = ("red", "green", "blue")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# What the saver asks the run about (for the sidecar): the bundle and the source, as a Runner answers.
RUN = SimpleNamespace(bundle=SimpleNamespace(labels=LABELS, name="colours", path="/releases/colours-v1"),
                      source_description=lambda: "camera /dev/video0 (160x120 @ 30 fps)")


def _frame(index: int, name: str = "red") -> Frame:
    return Frame(colour_frame(name, seed=index), 1_750_000_000.0 + index, index)


def _feed(saver: UncertainSaver, scores, index: int, name: str = "red") -> None:
    """One classified frame through the output interface, as the frame loop hands it over; then wait for the disk."""
    if getattr(saver, "_run", None) is None:
        saver.start(RUN)
    saver.write(_frame(index, name), Decider(LABELS, k=3).update(np.asarray(scores, np.float32)))
    assert saver.flush(10)


def _loose(directory):
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def test_only_low_scores_are_saved_as_jpeg_and_sidecar(tmp_path):
    saver = UncertainSaver(tmp_path / "u", threshold=0.5, clock=Clock())
    _feed(saver, [0.9, 0.05, 0.05], 1)
    assert _loose(tmp_path / "u") == []
    _feed(saver, [0.4, 0.35, 0.25], 2, "green")
    names = _loose(tmp_path / "u")
    assert len(names) == 2 and names[0].endswith("_f0000002_red.jpg") and names[1].endswith("_f0000002_red.json")
    sidecar = json.loads((tmp_path / "u" / names[1]).read_text())
    assert sidecar["guess"] == "red" and sidecar["top_score"] == 0.4 and sidecar["bundle"] == "colours"
    assert list(sidecar["scores"]) == ["red", "green", "blue"] and sidecar["scores"]["green"] == 0.35
    # The JPEG is the frame (lossy but close), in RGB order.
    rgb = load_image(tmp_path / "u" / names[0])
    original = _frame(2, "green").rgb
    assert rgb.shape == original.shape and np.abs(rgb.astype(int) - original).mean() < 12


def test_rate_limit_is_a_sliding_minute(tmp_path):
    clock = Clock()
    saver = UncertainSaver(tmp_path, threshold=0.5, max_per_minute=3, clock=clock)
    for i in range(10):
        _feed(saver, [0.4, 0.3, 0.3], i)
        clock.now += 1
    assert saver.saved == 3
    clock.now += 55  # the first save is now a minute old
    _feed(saver, [0.4, 0.3, 0.3], 20)
    assert saver.saved == 4


def test_disk_cap_removes_oldest_loose_frames_only(tmp_path):
    clock = Clock()
    saver = UncertainSaver(tmp_path, threshold=0.5, max_per_minute=1000, max_mb=1, clock=clock)
    for i in range(3):
        _feed(saver, [0.4, 0.3, 0.3], i)
    per_frame = saver.total_bytes / 3
    # A person already sorted one frame into a class folder: it is theirs now.
    (tmp_path / "red").mkdir()
    first = sorted(tmp_path.glob("*.jpg"))[0]
    os.replace(first, tmp_path / "red" / first.name)
    cap = int(per_frame * 5.5)
    saver.max_bytes = cap
    for i in range(3, 12):
        _feed(saver, [0.4, 0.3, 0.3], i)
    assert saver.total_bytes <= cap
    jpgs = sorted(p.name for p in tmp_path.glob("*.jpg"))
    assert len(jpgs) == 5 and jpgs[-1].endswith("_f0000011_red.jpg") and jpgs[0].endswith("_f0000007_red.jpg")
    assert len(list(tmp_path.glob("*.json"))) == 5  # sidecars go with their frames
    assert (tmp_path / "red" / first.name).exists()  # sorted frames are never removed


def test_restart_counts_existing_frames_against_the_cap(tmp_path):
    saver = UncertainSaver(tmp_path, threshold=0.5, clock=Clock())
    for i in range(2):
        _feed(saver, [0.4, 0.3, 0.3], i)
    (tmp_path / "notes.txt").write_text("mine")  # not ours: ignored, never deleted
    again = UncertainSaver(tmp_path, threshold=0.5, clock=Clock())
    assert again.total_bytes == saver.total_bytes > 0
    again.max_bytes = 1
    _feed(again, [0.4, 0.3, 0.3], 5)
    assert _loose(tmp_path) == ["notes.txt"]


def test_sorted_folder_is_a_dataset_layout(tmp_path):
    """After sorting into class folders, the images are found per class and the sidecars are not images."""
    saver = UncertainSaver(tmp_path, threshold=0.5, max_per_minute=100, clock=Clock())
    for i, name in enumerate(["red", "green", "red", "green"]):
        _feed(saver, [0.4, 0.3, 0.3], i, name)
    for cls in ("red", "green"):
        (tmp_path / cls).mkdir()
    for i, jpg in enumerate(sorted(tmp_path.glob("*.jpg"))):
        cls = ["red", "green"][i % 2]
        for path in (jpg, jpg.with_suffix(".json")):
            os.replace(path, tmp_path / cls / path.name)
    listing = list_images([tmp_path / "red"])
    assert len(listing.images) == 2 and all(p.suffix == ".jpg" for p in listing.images)
    assert all(p.suffix == ".json" for p in listing.skipped)

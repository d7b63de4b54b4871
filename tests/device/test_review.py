"""Sorting uncertain frames into the dataset: moved once, never copied twice, nothing lost at any crash point."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from edgeclass.device.outputs.dataset import Dataset
from edgeclass.device.outputs.review import ReviewError, UncertainFrames
from edgeclass.device.outputs.uncertain import UncertainSaver

from .conftest import colour_frame
from .http_helpers import colour_cycle_video, request, serving

LABELS = ("red", "green", "blue")


def _saved(folder: Path, n: int = 3) -> list[str]:
    """``n`` frames saved by the real uncertain-frame saver; their stems."""
    saver = UncertainSaver(folder, threshold=0.9)
    stems = []
    for i in range(n):
        path = saver.save(colour_frame(LABELS[i % 3], seed=i), np.array([0.5, 0.3, 0.2], np.float32), LABELS,
                          frame_index=i, timestamp=1_750_000_000.0 + i, guess=LABELS[0])
        stems.append(path.stem)
    saver.close()
    return stems


def _everything(*roots: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for root in roots for p in root.rglob("*") if p.is_file())


def test_pending_frames_show_the_guess_and_top_k(tmp_path):
    stems = _saved(tmp_path / "u")
    (tmp_path / "u" / "notes.txt").write_text("mine")
    frames = UncertainFrames(tmp_path / "u", Dataset(tmp_path / "ds"))
    pending = frames.pending()
    assert [p.stem for p in pending] == stems
    assert pending[0].guess == "red" and pending[0].top_score == 0.5
    assert pending[0].top_k == [("red", 0.5), ("green", 0.3), ("blue", 0.2)]


def test_move_is_a_move_and_repeating_it_is_harmless(tmp_path):
    stems = _saved(tmp_path / "u")
    frames = UncertainFrames(tmp_path / "u", Dataset(tmp_path / "ds"))
    jpeg = (tmp_path / "u" / f"{stems[0]}.jpg").read_bytes()
    target = frames.move(stems[0], "green", LABELS)
    assert target == tmp_path / "ds" / "green" / f"{stems[0]}.jpg" and target.read_bytes() == jpeg
    assert not (tmp_path / "u" / f"{stems[0]}.jpg").exists() and not (tmp_path / "u" / f"{stems[0]}.json").exists()
    sidecar = json.loads((tmp_path / "ds" / "green" / f".{stems[0]}.json").read_text())
    assert sidecar["label"] == "green" and sidecar["guess"] == "red" and "moving_to" not in sidecar
    assert frames.move(stems[0], "green", LABELS) == target  # a second click: the same answer, no second copy
    assert len(list((tmp_path / "ds").rglob("*.jpg"))) == 1
    frames.discard(stems[1])
    assert [p.stem for p in frames.pending()] == [stems[2]]
    with pytest.raises(ReviewError, match="no such frame"):
        frames.discard(stems[1])
    with pytest.raises(ReviewError, match="not the name of a saved frame"):
        frames.move("../../etc/passwd", "red", LABELS)
    with pytest.raises(ReviewError, match="not one of"):
        frames.move(stems[2], "purple", LABELS)


def test_a_crash_before_the_new_name_leaves_the_frame_where_it_was(tmp_path):
    stems = _saved(tmp_path / "u", 1)
    frames = UncertainFrames(tmp_path / "u", Dataset(tmp_path / "ds"))
    sidecar = tmp_path / "u" / f"{stems[0]}.json"
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "moving_to": f"blue/{stems[0]}.jpg"}))  # step 1 done, then power lost
    assert [p.stem for p in frames.pending()] == stems  # recovered: still waiting, nothing half in the dataset
    assert "moving_to" not in json.loads(sidecar.read_text())
    assert not list((tmp_path / "ds").rglob("*.jpg"))
    assert frames.move(stems[0], "blue").exists()


def test_a_crash_after_the_new_name_finishes_the_move(tmp_path):
    stems = _saved(tmp_path / "u", 1)
    frames = UncertainFrames(tmp_path / "u", Dataset(tmp_path / "ds"))
    jpg, sidecar = tmp_path / "u" / f"{stems[0]}.jpg", tmp_path / "u" / f"{stems[0]}.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "moving_to": f"red/{jpg.name}"}))
    (tmp_path / "ds" / "red").mkdir(parents=True)
    os.link(jpg, tmp_path / "ds" / "red" / jpg.name)  # step 2 done, the old name not yet removed
    assert frames.pending() == []
    assert _everything(tmp_path / "u", tmp_path / "ds") == [f"red/.{stems[0]}.json", f"red/{jpg.name}"]


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm for a second file system")
def test_across_file_systems_the_frame_is_copied_then_removed(tmp_path):
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same file system here")
        stems = _saved(Path(shm), 2)
        frames = UncertainFrames(shm, Dataset(tmp_path / "ds"))
        data = (Path(shm) / f"{stems[0]}.jpg").read_bytes()
        target = frames.move(stems[0], "red")
        assert target.read_bytes() == data and not (Path(shm) / f"{stems[0]}.jpg").exists()
        # A crash after the copy was renamed into place but before the old file went: finished, not duplicated.
        jpg = Path(shm) / f"{stems[1]}.jpg"
        sidecar = Path(shm) / f"{stems[1]}.json"
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "moving_to": f"blue/{jpg.name}"}))
        (tmp_path / "ds" / "blue").mkdir()
        (tmp_path / "ds" / "blue" / jpg.name).write_bytes(jpg.read_bytes())
        assert frames.pending() == [] and not jpg.exists()
        assert len(list((tmp_path / "ds").rglob("*.jpg"))) == 2


def test_review_page_and_api_move_and_discard(colour_bundle, tmp_path):
    stems = _saved(tmp_path / "u")
    video = colour_cycle_video(tmp_path / "v.avi")
    with serving(video, colour_bundle, dataset=tmp_path / "ds", uncertain_dir=tmp_path / "u") as s:
        page = request(s.url + "/review").text
        assert page.count('<figure class="card"') == 3 and f'data-stem="{stems[0]}"' in page
        image = request(f"{s.url}/review/frames/{stems[0]}.jpg")
        assert image.status == 200 and image.body[:2] == b"\xff\xd8"
        listing = request(s.url + "/api/review").json()
        assert [f["stem"] for f in listing["frames"]] == stems and listing["labels"] == list(LABELS)
        moved = request(s.url + "/api/review", method="POST", body={"stem": stems[0], "label": "blue"}).json()
        assert moved == {"moved": stems[0], "to": f"blue/{stems[0]}.jpg"}
        again = request(s.url + "/api/review", method="POST", body={"stem": stems[0], "label": "blue"})
        assert again.status == 200
        gone = request(s.url + "/api/review", method="POST", body={"stem": stems[1], "discard": True})
        assert gone.status == 200
        missing = request(s.url + "/api/review", method="POST", body={"stem": stems[1], "discard": True})
        assert missing.status == 404
        assert request(f"{s.url}/review/frames/..%2F..%2Fetc%2Fpasswd.jpg").status == 404
    assert _everything(tmp_path / "ds") == [f"blue/.{stems[0]}.json", f"blue/{stems[0]}.jpg"]
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == [f"{stems[2]}.jpg", f"{stems[2]}.json"]

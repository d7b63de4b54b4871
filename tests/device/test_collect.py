"""Collecting photos: the dataset folder only grows, ``edgeclass collect`` saves what the camera shows, train reads it."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from edgeclass.device.outputs.dataset import Dataset, DatasetFolderError, check_labels, utc_stamp
from edgeclass.device.pipeline.images import load_image

from .cli_helpers import _MAIN, edgeclass
from .conftest import colour_frame, write_video
from .http_helpers import colour_cycle_video, free_port, request, serving, wait_for


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return colour_cycle_video(tmp_path_factory.mktemp("collect") / "cycle.avi")


def test_a_photo_never_overwrites_one_already_there(tmp_path):
    ds = Dataset(tmp_path / "ds")
    when = 1_750_000_000.25
    (tmp_path / "ds" / "cat").mkdir()
    mine = tmp_path / "ds" / "cat" / f"{utc_stamp(when)}.jpg"
    mine.write_bytes(b"the user's own photo")
    first = ds.add("cat", b"\xff\xd8 new photo", when)
    second = ds.add("cat", b"\xff\xd8 another", when)
    assert mine.read_bytes() == b"the user's own photo"
    assert first.name == f"{utc_stamp(when)}-2.jpg" and second.name == f"{utc_stamp(when)}-3.jpg"
    assert first.read_bytes() == b"\xff\xd8 new photo" and oct(first.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in (tmp_path / "ds" / "cat").iterdir()) == sorted([mine.name, first.name, second.name])
    assert ds.counts(["cat", "dog"]) == {"cat": 3, "dog": 0}


def test_unusable_folders_and_labels_are_refused(tmp_path):
    (tmp_path / "split" / "train").mkdir(parents=True)
    with pytest.raises(DatasetFolderError, match="is split into train folders; point at one of them"):
        Dataset(tmp_path / "split")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetFolderError, match="is a file"):
        Dataset(tmp_path / "file")
    for bad in (["a", "a"], ["../up"], [".hidden"], ["a/b"], [" pad"], []):
        with pytest.raises(DatasetFolderError):
            check_labels(bad)
    assert check_labels(["cat", "no cat", "dog_2"]) == ("cat", "no cat", "dog_2")


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _MAIN, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def test_collect_with_labels_saves_full_frames_and_train_reads_the_folder(tmp_path):
    # 20 s without a repeated frame: a looping 1 s video would hand two presses a second apart the same picture.
    colours = ("red", "green", "blue")
    video = write_video(tmp_path / "long.avi", [colour_frame(colours[k // 10 % 3], seed=k) for k in range(600)])
    port = free_port()
    dataset = tmp_path / "photos"
    proc = _start("collect", "--source", video, "--loop", "--realtime", "-o", dataset, "--labels", "red,green,blue",
                  "--http", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout=30)
        page = request(url + "/collect").text
        assert page.count('class="save"') == 3 and 'data-key="1"' in page and "No model" in page
        assert request(url + "/api/latest").status == 404  # no model: nothing is classified
        saved = request(url + "/api/collect", method="POST", body={"label": "red"}).json()
        assert len(saved["saved"]) == 1 and saved["counts"] == {"red": 1, "green": 0, "blue": 0}
        _after_a_new_frame(url)
        burst = request(url + "/api/collect", method="POST", body={"label": "blue", "count": 4, "interval": 0.1}).json()
        assert len(burst["saved"]) == 4 and len(set(burst["saved"])) == 4 and burst["counts"]["blue"] == 4
        for label in ("green", "green", "green"):
            _after_a_new_frame(url)  # two presses within one frame would save that frame twice
            request(url + "/api/collect", method="POST", body={"label": label})
        _after_a_new_frame(url)
        more = request(url + "/api/collect", method="POST", body={"label": "red", "count": 2, "interval": 0.1}).json()
        assert more["counts"] == {"red": 3, "green": 3, "blue": 4}  # train needs 3 photos a class (train, val, test)
        bad = request(url + "/api/collect", method="POST", body={"label": "purple"})
        assert bad.status == 400 and "not one of red, green, blue" in bad.json()["error"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"{dataset} now holds: red 3, green 3, blue 4" in err
    photos = sorted(dataset.rglob("*.jpg"))
    assert len(photos) == 10 and len({p.read_bytes() for p in photos}) == 10
    frames = [load_image(p) for p in photos]
    assert all(f.shape == (120, 160, 3) for f in frames)  # the full camera frame, not the model's crop
    # Four burst frames are four different moments (the noise differs from frame to frame).
    blue = [load_image(p).astype(int) for p in sorted((dataset / "blue").glob("*.jpg"))]
    assert all(np.abs(a - b).mean() > 1 for a, b in zip(blue, blue[1:]))

    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    if importlib.util.find_spec("PIL") is None:
        pytest.skip("edgeclass train needs the train extra (pip install 'edgeclass[train]'): "
                    "the collected folder was checked up to here")
    # The folder as it is: train's own scan, split and audit (what a training run does before TensorFlow loads).
    checked = edgeclass("train", dataset, "--check-only", env={"COLUMNS": "200"})
    assert checked.returncode == 0 and "Traceback" not in checked.stderr, checked.stderr[-2000:]
    assert "classes: 3, readable images: 10" in checked.stdout
    rows = {m.group(1): [int(n) for n in m.groups()[1:]]
            for m in re.finditer(r"│ (\w+)\s+│\s+(\d+) │\s+(\d+) │\s+(\d+) │\s+(\d+) │", checked.stdout)}
    assert {label: r[3] for label, r in rows.items()} == {"blue": 4, "green": 3, "red": 3, "all": 10}
    assert all(min(r[:3]) >= 1 for r in rows.values())  # every class has a train, a val and a test photo
    assert {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == before  # nothing written or moved


def _after_a_new_frame(url: str) -> None:
    frames = request(url + "/api/status").json()["frames"]
    wait_for(lambda: request(url + "/api/status").json()["frames"] >= frames + 2)


def _ready(url: str) -> bool:
    try:
        return request(url + "/api/collect", timeout=2).status == 200 and request(url + "/snapshot.jpg").status == 200
    except OSError:
        return False


def test_collect_with_a_bundle_shows_its_answer_and_uses_its_labels(colour_bundle, video, tmp_path):
    with serving(video, colour_bundle, dataset=tmp_path / "ds") as s:
        wait_for(lambda: s.loop.latest is not None)
        page = request(s.url + "/collect").text
        assert [label for label in ("red", "green", "blue") if f'data-label="{label}"' in page] == ["red", "green", "blue"]
        assert '<div id="label" class="label">' in page and "No model" not in page


def test_collect_refuses_what_cannot_work(video, tmp_path):
    none = edgeclass("collect", "--source", video, "-o", tmp_path / "ds")
    assert none.returncode == 2 and "collect needs --labels a,b,c (no model) or --bundle B" in none.stderr
    bad = edgeclass("collect", "--source", video, "-o", tmp_path / "ds", "--labels", "cat,../dog")
    assert bad.returncode == 2 and "label '../dog' cannot be a folder name" in bad.stderr
    (tmp_path / "f").write_text("x")
    file = edgeclass("collect", "--source", video, "-o", tmp_path / "f", "--labels", "cat")
    assert file.returncode == 2 and "is a file, expected a dataset folder" in file.stderr
    assert "Traceback" not in none.stderr + bad.stderr + file.stderr
    assert (tmp_path / "f").read_text() == "x"

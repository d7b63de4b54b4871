"""`edgeclass predict`: real models on real images, and the refusals."""

from __future__ import annotations

import json
import shutil

import pytest

from ..conftest import run_edgeclass

CORAL_EXPECTED = {"cat.bmp": "Egyptian cat", "bird.bmp": "chickadee", "grace_hopper.bmp": "military uniform"}


def test_coral_mobilenet_v2_labels_the_reference_images(coral_bundle, shared_data):
    images = shared_data / "coral" / "images"
    result = run_edgeclass("predict", "--bundle", coral_bundle, "--json", *(images / name for name in CORAL_EXPECTED))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["path"].rsplit("/", 1)[-1]: r["label"] for r in rows} == CORAL_EXPECTED
    for row in rows:
        assert set(row) >= {"path", "label", "score", "top_k"}
        assert len(row["top_k"]) == 3 and row["top_k"][0] == {"label": row["label"], "score": row["score"]}
        assert row["top_k"][0]["score"] >= row["top_k"][1]["score"] >= row["top_k"][2]["score"]
        assert 0.5 < row["score"] <= 1.0


def test_predict_folder_skips_and_lists_non_images(colour_bundle, tmp_path):
    import cv2

    from .conftest import colour_frame

    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for name in ("red", "green", "blue"):
        cv2.imwrite(str(folder / "nested" / f"{name}.png"), cv2.cvtColor(colour_frame(name), cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    result = run_edgeclass("predict", "-b", colour_bundle, folder, "--json", "-k", "2")
    assert result.returncode == 0, result.stderr
    rows = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in result.stdout.splitlines()}
    assert {name: row["label"] for name, row in rows.items()} == {"red.png": "red", "green.png": "green", "blue.png": "blue"}
    assert all(len(row["top_k"]) == 2 for row in rows.values())
    assert f"skipped {folder / 'notes.txt'}: not an image file" in result.stderr
    assert f"skipped {folder / 'broken.jpg'}: not a readable image" in result.stderr
    assert "3 images classified, 2 files skipped" in result.stderr


def test_predict_human_output(colour_bundle, tmp_path):
    import cv2

    from .conftest import colour_frame

    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), cv2.cvtColor(colour_frame("blue"), cv2.COLOR_RGB2BGR))
    result = run_edgeclass("predict", "-b", colour_bundle, image)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{image}: blue 0.99")  # uint8 softmax tops out at 255/256


@pytest.mark.parametrize("case", ["missing_path", "no_images", "not_a_bundle", "labels_mismatch"])
def test_predict_refusals_are_one_line(colour_bundle, tmp_path, case):
    target = tmp_path
    bundle = colour_bundle
    if case == "missing_path":
        target, expected = tmp_path / "nothing-here", "nothing-here: no such file or folder"
    elif case == "no_images":
        (tmp_path / "a.txt").write_text("x")
        expected = "no images classified"
    elif case == "not_a_bundle":
        bundle, expected = tmp_path, "bundle.json: missing"
    else:
        bundle = tmp_path / "b"
        shutil.copytree(colour_bundle, bundle)
        (bundle / "labels.txt").write_text("red\ngreen\n")
        expected = "labels.txt: sha256 is"
    result = run_edgeclass("predict", "-b", bundle, target)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last
    assert "Traceback" not in result.stderr

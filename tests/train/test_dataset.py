"""Dataset scan, audit and split: real files of every awkward kind, no TensorFlow."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeclass.device.pipeline.images import load_image
from edgeclass.device.bundle import ResizePolicy
from edgeclass.device.pipeline.preprocess import resize_image
from edgeclass.train.audit import build_audit
from edgeclass.train.dataset import DatasetError, discover, handled_counts, scan
from edgeclass.train.split import make_split, plan_split

from ..conftest import run_edgeclass
from .conftest import CLASSES, make_tree, shape_image


def _snapshot(root: Path) -> dict[str, tuple[str, float]]:
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _awkward_files(root: Path) -> None:
    """Add to a class folder: every image kind the audit must handle, and files it must skip."""
    import cv2
    from PIL import Image

    rng = np.random.default_rng(1)
    d = root / "circles"
    bgr = shape_image("circles", rng, (60, 90))
    cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "rgba.png"), np.dstack([bgr, np.full(bgr.shape[:2], 128, np.uint8)]))
    cv2.imwrite(str(d / "deep.png"), bgr.astype(np.uint16) * 257)
    Image.fromarray(bgr[:, :, ::-1]).convert("CMYK").save(d / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(bgr[:, :, ::-1]).save(d / "rotated.jpg", exif=exif)
    good = (root / "squares" / "squares_000.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "corrupt.jpg").write_bytes(b"this is not a jpeg at all")
    (d / "notes.txt").write_text("not an image")
    shutil.copy(root / "circles" / "circles_000.jpg", root / "circles" / "copy_of_000.jpg")
    shutil.copy(root / "stripes" / "stripes_000.jpg", root / "squares" / "mislabelled.jpg")
    (root / "stray.jpg").write_bytes(good)


def test_audit_handles_and_reports_every_kind_of_file_without_touching_any(tree):
    _awkward_files(tree)
    before = _snapshot(tree)
    layout = discover(tree)
    records = scan(layout, workers=2)
    plan = plan_split(layout, records, (0.8, 0.1, 0.1), 42)
    split = plan.indices
    audit = build_audit(layout, records, plan)

    assert _snapshot(tree) == before, "the scan must never modify, add or delete a file"
    assert audit["labels"] == list(CLASSES)
    assert audit["handled"] == {"16-bit": 1, "alpha": 1, "cmyk": 1, "exif-rotated": 1, "grayscale": 1}
    assert {u["path"]: u["reason"].split(" ")[0] for u in audit["unreadable"]} == {
        "circles/truncated.jpg": "truncated", "circles/corrupt.jpg": "not"}
    assert audit["non_images"] == {"count": 1, "paths": ["circles/notes.txt"]}
    assert audit["outside_class_folders"] == {"count": 1, "paths": ["stray.jpg"]}
    assert audit["duplicates"]["groups"] == 2
    conflicts = audit["duplicates_with_different_labels"]
    assert [sorted(g["label"] for g in group) for group in conflicts["list"]] == [["squares", "stripes"]]
    # 10 + 5 handled kinds + 1 copy; the two unreadable files are not counted, and the
    # picture that is both a square and a stripe is left out of every split.
    assert audit["counts"]["circles"]["total"] == 16
    assert audit["counts"]["squares"]["total"] == 10 and audit["counts"]["stripes"]["total"] == 9
    assert audit["images"] == 16 + 10 + 9 and audit["readable"] == 16 + 11 + 10
    assert not {"squares/mislabelled.jpg", "stripes/stripes_000.jpg"} & {records[i].item.rel for rows in split.values() for i in rows}
    assert audit["imbalance_ratio"] > 1


def test_scanned_pixels_are_exactly_the_device_preprocessing(tree):
    """The cache rows equal load_image + resize_image for the same file (tolerance: 0, exact)."""
    _awkward_files(tree)
    layout = discover(tree)
    cache = np.zeros((len(layout.items), 48, 64, 3), np.uint8)
    records = scan(layout, cache, (48, 64), ResizePolicy.CENTER_CROP, workers=2)
    checked = 0
    for i, record in enumerate(records):
        if record.ok:
            expected = resize_image(load_image(tree / record.item.rel), 48, 64, ResizePolicy.CENTER_CROP)
            np.testing.assert_array_equal(cache[i], expected, err_msg=record.item.rel)
            checked += 1
    assert checked == 37


def test_split_is_stratified_seeded_and_keeps_duplicates_together(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 30, "b": 20, "c": 7})
    for i in range(3):  # a file copied three times must not straddle splits
        shutil.copy(root / "a" / "a_000.jpg", root / "a" / f"dup_{i}.jpg")
    layout = discover(root)
    records = scan(layout, workers=2)
    first = make_split(layout, records, (0.8, 0.1, 0.1), 7)
    assert first == make_split(layout, records, (0.8, 0.1, 0.1), 7)
    assert first != make_split(layout, records, (0.8, 0.1, 0.1), 8)
    where = {records[i].item.rel: s for s, rows in first.items() for i in rows}
    assert len({where[f"a/dup_{i}.jpg"] for i in range(3)} | {where["a/a_000.jpg"]}) == 1
    for label, n in (("a", 33), ("b", 20), ("c", 7)):
        per = {s: sum(records[i].item.label == label for i in rows) for s, rows in first.items()}
        assert sum(per.values()) == n and min(per.values()) >= 1, (label, per)
    assert build_audit(layout, records, plan_split(layout, records, (0.8, 0.1, 0.1), 7))["leakage"]["groups"] == 0


def test_presplit_folders_are_kept_and_leakage_is_reported(tmp_path):
    root = tmp_path / "data"
    make_tree(root / "train", {c: 8 for c in CLASSES}, seed=1)
    make_tree(root / "test", {c: 3 for c in CLASSES}, seed=2)
    shutil.copy(root / "train" / "circles" / "circles_000.jpg", root / "test" / "circles" / "leaked.jpg")
    layout = discover(root)
    assert layout.presplit and layout.split_dirs == {"train": "train", "test": "test"}
    records = scan(layout, workers=2)
    plan = plan_split(layout, records, (0.8, 0.1, 0.1), 0)
    split = plan.indices
    assert {records[i].item.rel.split("/")[0] for i in split["test"]} == {"test"}
    # No val folder: val is carved from train, stratified.
    assert {records[i].item.label for i in split["val"]} == set(CLASSES)
    assert {records[i].item.rel.split("/")[0] for i in split["val"]} == {"train"}
    audit = build_audit(layout, records, plan)
    assert audit["leakage"]["groups"] == 1
    assert {g["path"] for g in audit["leakage"]["list"][0]} == {"train/circles/circles_000.jpg", "test/circles/leaked.jpg"}


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda r: r, "no such folder"),
        (lambda r: r.mkdir(), "no class folders"),
        (lambda r: make_tree(r, {"only": 5}), "found 1 class (only), a classifier needs at least 2"),
        (lambda r: (make_tree(r, {"a": 5, "b": 5}), (r / "empty").mkdir()), "class folder(s) with no images: empty"),
        (lambda r: make_tree(r, {"a": 5, "b": 2}), "/b: 2 readable image(s), too few to split 0.8/0.1/0.1: need at least 3"),
        (lambda r: (make_tree(r / "train", {"a": 5, "b": 5}), make_tree(r / "test", {"a": 2, "c": 2})),
         "no folder for class(es) c that appear in val/test"),
    ],
    ids=["missing", "empty", "one-class", "empty-class", "too-few", "presplit-unknown-class"],
)
def test_refusals(tmp_path, build, message):
    root = tmp_path / "data"
    build(root)
    with pytest.raises(DatasetError, match=None) as caught:
        layout = discover(root)
        make_split(layout, scan(layout, workers=1), (0.8, 0.1, 0.1), 0)
    assert message in str(caught.value)
    assert str(root) in str(caught.value)


def test_unreadable_files_do_not_count_towards_a_class(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 5, "b": 2})
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nothing else")
    layout = discover(root)
    with pytest.raises(DatasetError, match="b: 2 readable image"):
        make_split(layout, scan(layout, workers=1), (0.8, 0.1, 0.1), 0)


def test_check_only_prints_the_audit_and_writes_nothing(tree, tmp_path):
    _awkward_files(tree)
    before = set(tmp_path.rglob("*"))
    result = run_edgeclass("train", tree, "--check-only")
    assert result.returncode == 0, result.stderr
    for text in ("circles", "readable images: 37 (35 in the splits)", "truncated JPEG", "circles/corrupt.jpg",
                 "1 file(s) not images", "exact duplicates: 2 group(s)", "excluded: 1 group(s) of the same picture under different labels",
                 "squares/mislabelled.jpg (squares) = stripes/stripes_000.jpg (stripes)", "handled by the decoder: 1 16-bit"):
        assert text in result.stdout, text
    assert set(tmp_path.rglob("*")) == before
    assert "Traceback" not in result.stderr


def test_check_only_refusal_is_one_line_and_exit_2(tmp_path):
    make_tree(tmp_path / "data", {"a": 4})
    result = run_edgeclass("train", tmp_path / "data", "--check-only")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "a classifier needs at least 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_jpeg_without_its_end_marker_is_kept_and_a_truncated_one_is_not(tree, shared_data):
    """Some cameras and editors drop the final FFD9 marker: every pixel is still there, so the file is used
    (and decoded by the device decoder too); a file cut short is skipped. Checked on real photos and generated ones."""
    photos = sorted((shared_data / "flowers" / "roses").glob("*.jpg"))[:3] + sorted((tree / "squares").glob("*.jpg"))[:2]
    for k, photo in enumerate(photos):
        data = photo.read_bytes()
        assert data.endswith(b"\xff\xd9")
        (tree / "circles" / f"no_eoi_{k}.jpg").write_bytes(data[:-2])
        (tree / "circles" / f"cut_{k}.jpg").write_bytes(data[: len(data) * 3 // 4])
    layout = discover(tree)
    records = {r.item.rel: r for r in scan(layout, workers=2)}
    for k, photo in enumerate(photos):
        kept = records[f"circles/no_eoi_{k}.jpg"]
        assert kept.ok and kept.info.missing_eoi, kept
        np.testing.assert_array_equal(load_image(tree / "circles" / f"no_eoi_{k}.jpg"), load_image(photo))
        cut = records[f"circles/cut_{k}.jpg"]
        assert not cut.ok and cut.error.startswith("truncated JPEG"), cut
    assert handled_counts(list(records.values()))["no end-of-image marker"] == len(photos)

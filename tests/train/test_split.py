"""The content-hash split: stable when photos come and go, small classes, --since, leakage. No TensorFlow."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgeclass.train.dataset import DatasetError, discover, scan
from edgeclass.train.split import hashed_split, plan_split, split_json, split_point

from ..conftest import run_edgeclass
from .conftest import distinct_image, make_tree, shape_image

RATIOS = (0.8, 0.1, 0.1)


def _assignment(root: Path, seed: int = 42, earlier=None) -> dict[str, str]:
    """path -> split for the dataset at ``root``."""
    layout = discover(root)
    records = scan(layout, workers=2)
    plan = plan_split(layout, records, RATIOS, seed, earlier)
    return {records[i].item.rel: s for s, rows in plan.indices.items() for i in rows}, plan


def _write(path: Path, bgr: np.ndarray, quality: int = 90) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])


def test_adding_and_removing_photos_moves_no_other_photo(tmp_path):
    """The issue's measurement: 10 photos added to one class of a 100-photo dataset moved 31 others. Now 0."""
    root = make_tree(tmp_path / "data", {"circles": 40, "squares": 30, "stripes": 30}, seed=3, distinct=True)
    before, plan = _assignment(root)
    assert not plan.moved, "precondition: every class got val and test photos from the hash alone"
    assert len(before) == 100
    # Add 10 photos to the first class, remove 2 train, 1 val and 1 test photo of other classes.
    rng = np.random.default_rng(99)
    for k in range(10):
        _write(root / "circles" / f"new_{k}.jpg", distinct_image(rng))
    count = Counter((p.split("/")[0], s) for p, s in before.items())
    gone = [next(p for p, s in sorted(before.items()) if s == want and p.split("/")[0] == label)
            for label in ("squares", "stripes") for want in ("train", "val", "test") if count[label, want] > 1]
    for path in gone:
        (root / path).unlink()
    after, plan = _assignment(root)
    assert not plan.moved
    moved = {p: (before[p], after[p]) for p in before if p in after and before[p] != after[p]}
    print(f"photos moved between splits after adding 10 and removing {len(gone)}: {len(moved)} of {len(before) - len(gone)}")
    assert moved == {}
    assert set(before) - set(after) == set(gone)
    new = {p: s for p, s in after.items() if p not in before}
    assert len(new) == 10 and all(p.startswith("circles/new_") for p in new)


def test_renaming_or_moving_a_file_keeps_its_split(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 20, "b": 20})
    before, _ = _assignment(root)
    (root / "a" / "sub").mkdir()
    for name in ("a_000.jpg", "a_001.jpg", "a_002.jpg"):
        shutil.move(root / "a" / name, root / "a" / "sub" / f"renamed_{name}")
    after, _ = _assignment(root)
    for name in ("a_000.jpg", "a_001.jpg", "a_002.jpg"):
        assert after[f"a/sub/renamed_{name}"] == before[f"a/{name}"]


def test_split_is_stratified_in_expectation():
    """The rule itself, on 20,000 content hashes: each split's share is within 1 point of its ratio."""
    shares = Counter(hashed_split(split_point(5, f"{k:064x}"), RATIOS) for k in range(20000))
    assert abs(shares["train"] / 20000 - 0.8) < 0.01 and abs(shares["val"] / 20000 - 0.1) < 0.01
    assert abs(shares["test"] / 20000 - 0.1) < 0.01
    # A different seed is a different split.
    other = [hashed_split(split_point(6, f"{k:064x}"), RATIOS) for k in range(2000)]
    same = [hashed_split(split_point(5, f"{k:064x}"), RATIOS) for k in range(2000)]
    assert sum(a != b for a, b in zip(other, same)) > 400


def test_small_class_gets_every_split_and_since_keeps_it_when_it_grows(tmp_path):
    """A 4-photo class: the hash alone leaves a split empty, so the nearest train photo is moved there.
    When the class grows, --since keeps that photo where the earlier run had it."""
    root = make_tree(tmp_path / "data", {"big": 40, "small": 4}, seed=1)
    first, plan = _assignment(root, seed=0)
    per = Counter(s for p, s in first.items() if p.startswith("small/"))
    assert set(per) == {"train", "val", "test"} and sum(per.values()) == 4
    assert plan.moved, "precondition: with seed 0 the hash leaves the 4-photo class without a val or test photo"
    earlier = {}
    layout = discover(root)
    records = scan(layout, workers=2)
    for s, rows in plan_split(layout, records, RATIOS, 0).indices.items():
        earlier.update({records[i].sha256: s for i in rows})
    rng = np.random.default_rng(5)
    for k in range(30):
        _write(root / "small" / f"more_{k}.jpg", shape_image("squares", rng))
    kept, plan = _assignment(root, seed=0, earlier=earlier)
    assert {p: kept[p] for p in first} == first
    assert plan.pinned == len(first)


def test_a_new_near_duplicate_never_moves_a_test_photo_into_training(tmp_path):
    """A group's split comes from its lowest member hash, so a new member can only pull it towards test."""
    import cv2

    root = make_tree(tmp_path / "data", {"a": 30, "b": 30}, seed=8, distinct=True)
    before, _ = _assignment(root)
    for k, (path, _s) in enumerate(sorted(before.items())):
        image = cv2.imread(str(root / path))
        for q in (70, 50):  # two re-encodes of every photo: each joins its original's group
            _write(root / Path(path).parent / f"again_{q}_{k}.jpg", image, q)
    after, plan = _assignment(root)
    order = {"test": 0, "val": 1, "train": 2}
    assert all(order[after[p]] <= order[s] for p, s in before.items())
    assert all(after[p] == "test" for p, s in before.items() if s == "test")
    assert len(plan.groups) == len(before)


def test_too_few_distinct_pictures_is_refused(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 10, "b": 2})
    shutil.copy(root / "b" / "b_000.jpg", root / "b" / "copy.jpg")
    layout = discover(root)
    with pytest.raises(DatasetError, match=r"/b: 3 readable image\(s\), 2 distinct \(the rest are near-duplicates\), "
                                           r"too few to split 0.8/0.1/0.1: need at least 3"):
        plan_split(layout, scan(layout, workers=1), RATIOS, 0)


def _burst(root: Path, label: str, name: str, rng) -> list[str]:
    """A re-encoded, resized and burst-like family of one photo, written under ``root/label``."""
    import cv2

    base = shape_image(label, rng, (120, 160))
    h, w = base.shape[:2]
    variants = {
        f"{name}.jpg": (base, 95),
        f"{name}_q60.jpg": (base, 60),
        f"{name}_half.jpg": (cv2.resize(base, (w // 2, h // 2), interpolation=cv2.INTER_AREA), 90),
        f"{name}_burst.jpg": (np.clip(base[2:, 3:].astype(np.float32) * 1.05 + rng.normal(0, 3, base[2:, 3:].shape),
                                      0, 255).astype(np.uint8), 85),
    }
    for file, (image, quality) in variants.items():
        _write(root / label / file, image, quality)
    return [f"{label}/{f}" for f in variants]


def test_near_duplicates_share_a_split_and_conflicting_labels_are_excluded(tmp_path):
    root = make_tree(tmp_path / "data", {"circles": 25, "squares": 25, "stripes": 25}, seed=2)
    rng = np.random.default_rng(11)
    families = [_burst(root, "circles", f"burst{k}", rng) for k in range(6)]
    # The same picture filed under two labels: excluded, whichever label is right.
    shutil.copy(root / "squares" / "squares_004.jpg", root / "stripes" / "looks_striped.jpg")
    where, plan = _assignment(root)
    for family in families:
        assert len({where[p] for p in family}) == 1, {p: where[p] for p in family}
    excluded = {i for g in plan.excluded for i in g}
    layout = discover(root)
    records = scan(layout, workers=1)
    assert {records[i].item.rel for i in excluded} == {"squares/squares_004.jpg", "stripes/looks_striped.jpg"}
    assert "squares/squares_004.jpg" not in where and "stripes/looks_striped.jpg" not in where
    doc = split_json(layout, records, plan, RATIOS, 42)
    assert {e["path"] for e in doc["excluded"]} == {"squares/squares_004.jpg", "stripes/looks_striped.jpg"}


def test_presplit_leakage_is_reported_and_refused_with_the_flag(tmp_path):
    root = tmp_path / "data"
    make_tree(root / "train", {"a": 8, "b": 8}, seed=1)
    make_tree(root / "val", {"a": 3, "b": 3}, seed=2)
    make_tree(root / "test", {"a": 3, "b": 3}, seed=3)
    import cv2

    # A re-encoded copy of a training photo sits in the test folder: a near-duplicate, not a byte copy.
    image = cv2.imread(str(root / "train" / "a" / "a_001.jpg"))
    _write(root / "test" / "a" / "reencoded.jpg", image, quality=60)
    report = run_edgeclass("train", root, "--check-only")
    assert report.returncode == 0, report.stderr
    assert "LEAKAGE: 1 group(s) of the same picture straddle the split folders" in report.stdout
    assert "train/a/a_001.jpg (train) = test/a/reencoded.jpg (test)" in report.stdout
    refused = run_edgeclass("train", root, "--check-only", "--refuse-leakage")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {root}: 1 picture(s) appear in more than one split folder, e.g. train/a/a_001.jpg (train) = "
        "test/a/reencoded.jpg (test); remove the copies (or train without --refuse-leakage)")


def _fake_run(run: Path, data: Path) -> Path:
    """The split.json an earlier training run left (what --since reads), made by the same code."""
    layout = discover(data)
    records = scan(layout, workers=2)
    plan = plan_split(layout, records, RATIOS, 42)
    run.mkdir(parents=True)
    (run / "split.json").write_text(json.dumps(split_json(layout, records, plan, RATIOS, 42)))
    return run


def test_since_reports_new_photos_and_proves_the_test_set_held(tmp_path):
    data = make_tree(tmp_path / "data", {"circles": 30, "squares": 30, "stripes": 30}, seed=4)
    run = _fake_run(tmp_path / "runs" / "v1", data)
    earlier = json.loads((run / "split.json").read_text())
    rng = np.random.default_rng(7)
    for k in range(10):  # sorted uncertain frames from the device, say
        _write(data / "squares" / f"frame_{k}.jpg", shape_image("squares", rng))
    (data / earlier["train"][0]["path"]).unlink()
    (data / "stripes" / "renamed.jpg").write_bytes((data / earlier["test"][-1]["path"]).read_bytes())
    (data / earlier["test"][-1]["path"]).unlink()

    result = run_edgeclass("train", data, "--check-only", "--since", run)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"since {run.resolve()}: 10 new photo(s), 1 removed, 0 moved" in out
    tests = len(earlier["test"])
    assert f"test set: {tests} of the earlier run's test photos are still in the dataset; all of them are test photos now; 0 in training" in out
    assert "new in squares:" in out

    different = run_edgeclass("train", data, "--check-only", "--since", run, "--seed", "7")
    assert different.returncode == 2
    assert "that run was split with --seed 42 --split 0.8,0.1,0.1, this one with --seed 7" in different.stderr
    missing = run_edgeclass("train", data, "--check-only", "--since", tmp_path / "nope")
    assert missing.returncode == 2 and "no split.json there" in missing.stderr

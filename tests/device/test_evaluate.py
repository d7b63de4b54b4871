"""``edgeclass bundle evaluate``: a bundle's accuracy measured by the device path, with real models and files.

The colour classifier is a real uint8 TFLite model run by LiteRT; its
datasets are real JPEG/PNG files, some deliberately filed under the wrong
label, so the expected figures are known exactly. Coral's MobileNetV2 checks
the same path on real photos.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata, util
from pathlib import Path

import cv2
import pytest

from edgeclass.device.pipeline.dataset import LabelledImage, stratified_sample

from .cli_helpers import edgeclass
from .conftest import colour_frame

# folder (true label) -> colours of the images in it: two greens are filed as red, one red as blue.
FILED = {"red": ["red", "red", "red", "green", "green"], "green": ["green"] * 4, "blue": ["blue", "blue", "blue", "red"]}


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> Path:
    """Real image files in class folders, 13 images of which 3 are filed under the wrong label."""
    root = tmp_path_factory.mktemp("colour_data") / "photos"
    for label, colours in FILED.items():
        (root / label).mkdir(parents=True)
        for i, colour in enumerate(colours):
            suffix = ".png" if i % 2 else ".jpg"
            frame = colour_frame(colour, 90 + 10 * i, 120, seed=i)
            cv2.imwrite(str(root / label / f"{label}_{i}{suffix}"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return root


def _evaluate(*args, **kwargs):
    """``edgeclass bundle evaluate ARGS`` in a fresh process, as a user runs it."""
    return edgeclass("bundle", "evaluate", *args, **kwargs)


def _refused(*args) -> str:
    """The one-line error of ``bundle evaluate ARGS``, run in this process (the refusals need no interpreter)."""
    from edgeclass.device.cli import app
    from edgeclass.device.errors import EdgeclassError

    with pytest.raises(EdgeclassError) as caught:
        app(["bundle", "evaluate", *map(str, args)], standalone_mode=False)
    return f"error: {caught.value}\n"


def test_folder_dataset_figures_are_exact(colour_bundle, colour_data, tmp_path):
    predictions = tmp_path / "predictions.jsonl"
    result = _evaluate(colour_bundle, colour_data, "--json", "--predictions", predictions, "--threads", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["images"] == 13 and data["correct"] == 10 and data["accuracy"] == round(10 / 13, 4)
    # red: 3 of 5 right, and the blue folder's red image is predicted red -> precision 3/4.
    assert data["per_class"]["red"] == {"precision": 0.75, "recall": 0.6, "f1": round(2 * 0.75 * 0.6 / 1.35, 4), "support": 5}
    assert data["per_class"]["green"] == {"precision": round(4 / 6, 4), "recall": 1.0, "f1": 0.8, "support": 4}
    assert data["per_class"]["blue"] == {"precision": 1.0, "recall": 0.75, "f1": round(1.5 / 1.75, 4), "support": 4}
    labels = data["labels"]
    assert labels == ["red", "green", "blue"]
    assert data["confusion_matrix"] == [[3, 2, 0], [0, 4, 0], [1, 0, 3]]
    assert data["top_k"] == 3 and data["top_k_accuracy"] == 1.0  # 3 labels: every true label is in the top 3
    assert data["backend"]["interpreter"] == "ai_edge_litert"
    assert data["backend"]["version"] == metadata.version("ai-edge-litert")
    assert data["backend"]["edgetpu"] is False and data["backend"]["threads"] == 1
    assert data["machine"]["machine"] == platform.machine() and data["machine"]["emulated"] is False
    assert data["latency_ms"]["p50"] > 0 and data["latency_ms"]["p95"] >= data["latency_ms"]["p50"]

    # Each line of --predictions is what 'predict' says about the same file.
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [line["path"] for line in lines] == sorted(line["path"] for line in lines)
    predicted = edgeclass("predict", "-b", colour_bundle, "--json", *(colour_data / line["path"] for line in lines))
    assert predicted.returncode == 0, predicted.stderr
    for line, pred in zip(lines, map(json.loads, predicted.stdout.splitlines())):
        assert line["predicted"] == pred["label"] and line["score"] == pytest.approx(pred["score"], abs=1e-6)
        assert line["correct"] == (line["label"] == line["predicted"])
        assert line["label"] == line["path"].split("/")[0]
    assert sum(line["correct"] for line in lines) == 10


def test_text_report_and_output_folder(colour_bundle, colour_data, tmp_path):
    out = tmp_path / "report"
    result = _evaluate(colour_bundle, colour_data, "-o", out)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "accuracy    76.92% (10 of 13), top-3 100.00%" in text
    assert f"machine     {platform.machine()}, " in text and "ai_edge_litert" in text
    assert "confusion matrix (rows: true label, columns: predicted)" in text
    assert (out / "report.txt").read_text() == text
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == round(10 / 13, 4)
    # The PNG needs matplotlib, which the device extra does not install.
    assert (out / "confusion_matrix.png").is_file() == (util.find_spec("matplotlib") is not None)


def test_calibration_figures_are_those_of_the_answers(colour_bundle, colour_data, tmp_path):
    from edgeclass.device.pipeline.calibration import expected_calibration_error

    out = tmp_path / "report"
    result = _evaluate(colour_bundle, colour_data, "-o", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    cal = metrics["calibration"]
    confidence = [line["score"] for line in lines]
    correct = [line["correct"] for line in lines]
    assert cal["images"] == 13 and cal["accuracy"] == round(10 / 13, 6)
    assert cal["ece"] == pytest.approx(expected_calibration_error(confidence, correct), abs=1e-5)
    assert sum(b["count"] for b in cal["bins"]) == 13
    assert f"calibration ECE {cal['ece']:.4f} over 13 images" in result.stdout
    assert (out / "reliability.png").is_file() == (util.find_spec("matplotlib") is not None)


def _split_doc(data_dir: Path, with_hashes: bool) -> dict:
    """A split.json over colour_data: the old format (path, label) or the content-hash one."""
    entries = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*.*"))
    rows = []
    for rel in entries:
        row = {"path": rel, "label": rel.split("/")[0]}
        if with_hashes:
            row["sha256"] = hashlib.sha256((data_dir / rel).read_bytes()).hexdigest()
        rows.append(row)
    doc = {"data_dir": "/elsewhere/photos", "seed": 0, "ratios": [0.6, 0.2, 0.2], "presplit": False,
           "train": rows[:3], "val": rows[3:5], "test": rows[5:]}
    if with_hashes:
        doc.update(method="content-hash", near_duplicate_bits=10,
                   excluded=[{"path": "x/y.jpg", "label": "x", "sha256": "0" * 64, "reason": "near-duplicate of a photo with another label"}])
    return doc


@pytest.mark.parametrize("with_hashes", [False, True], ids=["stratified-format", "content-hash-format"])
def test_split_file_in_both_formats(colour_bundle, colour_data, tmp_path, with_hashes):
    doc = _split_doc(colour_data, with_hashes)
    split = tmp_path / "split.json"
    split.write_text(json.dumps(doc))
    result = _evaluate(colour_bundle, colour_data, "--split-file", split, "--json", "--predictions", tmp_path / "p.jsonl")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["split"] == "test" and data["split_file"] == str(split)
    assert [json.loads(line)["path"] for line in (tmp_path / "p.jsonl").read_text().splitlines()] == [e["path"] for e in doc["test"]]
    assert data["images"] == len(doc["test"])
    val = _evaluate(colour_bundle, colour_data, "--split-file", split, "--split", "val", "--json")
    assert json.loads(val.stdout)["images"] == 2


def test_split_file_refusals(colour_bundle, colour_data, tmp_path):
    split = tmp_path / "split.json"
    doc = _split_doc(colour_data, with_hashes=True)

    doc["test"][0] = {**doc["test"][0], "path": "red/gone.jpg"}
    doc["test"][1] = {**doc["test"][1], "path": "red/also_gone.jpg"}
    split.write_text(json.dumps(doc))
    missing = _evaluate(colour_bundle, colour_data, "--split-file", split)
    assert missing.returncode == 2
    assert missing.stderr == (f"error: {colour_data}: 2 of the {len(doc['test'])} test photos listed in {split} are missing "
                              "(first: red/gone.jpg); pass the folder the split's paths are relative to "
                              "(it was /elsewhere/photos when the model was trained)\n")

    doc = _split_doc(colour_data, with_hashes=True)
    doc["test"][2]["sha256"] = "f" * 64
    split.write_text(json.dumps(doc))
    changed = _refused(colour_bundle, colour_data, "--split-file", split)
    assert f"1 test photo(s) differ from the ones {split} recorded (first: {doc['test'][2]['path']})" in changed

    doc = _split_doc(colour_data, with_hashes=False)
    doc["test"].append({"path": "red/red_0.jpg", "label": "purple"})
    split.write_text(json.dumps(doc))
    unknown = _refused(colour_bundle, colour_data, "--split-file", split)
    assert unknown.startswith(f"error: {split} (test split): label(s) purple are not among the bundle's 3 labels (red, green, blue)")

    split.write_text("{not json")
    assert _refused(colour_bundle, colour_data, "--split-file", split).startswith(f"error: {split}: not valid JSON")
    assert _refused(colour_bundle, colour_data, "--split", "val") == "error: --split needs --split-file (a training run's split.json)\n"
    assert "Traceback" not in missing.stderr


def test_folder_refusals_and_the_dataset_is_never_written(colour_bundle, colour_data, tmp_path):
    before = sorted((p, p.stat().st_mtime_ns) for p in colour_data.rglob("*"))
    assert "is inside the dataset folder" in _refused(colour_bundle, colour_data, "-o", colour_data / "report")
    assert sorted((p, p.stat().st_mtime_ns) for p in colour_data.rglob("*")) == before

    other = tmp_path / "other"
    (other / "red").mkdir(parents=True)
    (other / "cats").mkdir()
    assert _refused(colour_bundle, other).startswith(
        f"error: {other}: label(s) cats are not among the bundle's 3 labels (red, green, blue)")

    presplit = tmp_path / "presplit"
    for name in ("train", "test"):
        (presplit / name / "red").mkdir(parents=True)
    assert (f"holds train/test folders, not class folders; pass one of them (for example {presplit / 'test'})"
            in _refused(colour_bundle, presplit))
    assert _refused(colour_bundle, tmp_path / "nothing").startswith(f"error: {tmp_path / 'nothing'}: no such dataset folder")


def test_unreadable_files_are_skipped_and_listed(colour_bundle, colour_data, tmp_path):
    import shutil

    data = tmp_path / "photos"
    shutil.copytree(colour_data, data)
    (data / "green" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = _evaluate(colour_bundle, data, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["images"] == 13
    assert [s["path"] for s in out["skipped"]] == ["green/broken.jpg"]
    assert "not a readable image" in out["skipped"][0]["error"]


def test_max_images_is_a_stratified_sample(colour_bundle, colour_data):
    result = _evaluate(colour_bundle, colour_data, "--max-images", "6", "--json")
    data = json.loads(result.stdout)
    assert data["images"] == 6 and data["sampled"] == 6
    assert {label: m["support"] for label, m in data["per_class"].items()} == {"red": 2, "green": 2, "blue": 2}


def test_stratified_sample_is_stable_and_covers_every_class():
    items = [LabelledImage(Path(f"{c}/{i}.jpg"), f"{c}/{i}.jpg", c) for c in "abc" for i in range(10 if c != "c" else 2)]
    sample = stratified_sample(items, 7)
    assert sorted(i.label for i in sample) == ["a", "a", "a", "b", "b", "c", "c"]
    assert sample == [i for i in items if i in sample]  # in the dataset's order
    assert set(stratified_sample(list(reversed(items)), 7)) == set(sample)  # the same photos whatever the listing order
    assert {i.rel for i in sample if i.label == "a"} != {"a/0.jpg", "a/1.jpg", "a/2.jpg"}  # spread, not the first names
    assert stratified_sample(items, 100) == items


def test_coral_mobilenet_on_its_reference_photos(coral_bundle, shared_data, tmp_path):
    """Coral's documented answers (../shared/data/README.md), filed as a dataset with one wrong label."""
    import shutil

    images = shared_data / "coral" / "images"
    data = tmp_path / "coral"
    for label, name in (("Egyptian cat", "cat.bmp"), ("chickadee", "bird.bmp"), ("military uniform", "grace_hopper.bmp"),
                        ("goldfinch, Carduelis carduelis", "sunflower.bmp")):
        (data / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(images / name, data / label / name)
    result = _evaluate(coral_bundle, data, "--json", "-k", "5")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["images"] == 4 and out["correct"] == 3 and out["accuracy"] == 0.75
    assert out["per_class"]["Egyptian cat"]["recall"] == 1.0 and out["per_class"]["military uniform"]["recall"] == 1.0
    assert out["per_class"]["goldfinch, Carduelis carduelis"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert len(out["per_class"]) == 1001 and "crane [518]" in out["per_class"] and out["top_k"] == 5


def test_compare_predictions_lists_every_image_that_differs(colour_bundle, colour_data, tmp_path):
    from edgeclass.device.pipeline.evaluate import compare_predictions

    result = _evaluate(colour_bundle, colour_data, "--predictions", tmp_path / "a.jsonl", "--json")
    assert result.returncode == 0, result.stderr
    reference = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    other = [dict(p) for p in reversed(reference)]  # order does not matter, paths do
    flipped = next(p for p in other if p["correct"])
    flipped.update(predicted="blue" if flipped["label"] != "blue" else "red", score=0.5, correct=False)
    c = compare_predictions(reference, other)
    assert c["images"] == 13 and c["agreement"] == round(12 / 13, 4)
    assert c["reference_accuracy"] == round(10 / 13, 4) and c["other_accuracy"] == round(9 / 13, 4)
    assert [d["path"] for d in c["disagree"]] == [flipped["path"]]
    assert c["disagree"][0]["other"] == [flipped["predicted"], 0.5]
    with pytest.raises(ValueError, match="not of the same images"):
        compare_predictions(reference, other[1:])


def test_compare_with_another_evaluation_folder(colour_bundle, colour_data, tmp_path):
    """-o DIR from one machine, --compare-with DIR on another (here: the same machine, so they agree)."""
    first = _evaluate(colour_bundle, colour_data, "-o", tmp_path / "workstation", "--threads", "2")
    assert first.returncode == 0, first.stderr
    assert len((tmp_path / "workstation" / "predictions.jsonl").read_text().splitlines()) == 13
    second = _evaluate(colour_bundle, colour_data, "--compare-with", tmp_path / "workstation", "--json", "--threads", "1")
    assert second.returncode == 0, second.stderr
    other = json.loads(second.stdout)["compared_with"]
    assert other["images"] == 13 and other["accuracy"] == round(10 / 13, 4)
    assert other["agreement"] == 1.0 and other["drop_pp"] == 0.0 and other["disagree"] == []
    assert other["machine"]["machine"] == platform.machine() and other["backend"]["threads"] == 2
    text = _evaluate(colour_bundle, colour_data, "--compare-with", tmp_path / "workstation").stdout
    assert "compared    76.92% on the same 13 images on " in text and "0.00 points lower here, top-1 agreement 100.00%" in text

    fewer = _refused(colour_bundle, colour_data, "--compare-with", tmp_path / "workstation", "--max-images", "5")
    assert fewer == f"error: {tmp_path / 'workstation'}: evaluated 13 other images than these 5; compare evaluations of the same photos\n"
    missing = _refused(colour_bundle, colour_data, "--compare-with", tmp_path)
    assert missing == f"error: {tmp_path}: no metrics.json (expected the -o folder of another 'edgeclass bundle evaluate')\n"

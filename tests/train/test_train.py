"""Real training runs (MobileNetV2 alpha 0.35 at 64x64 on generated photos) and what they write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edgeclass.device.errors import EdgeclassError  # noqa: E402
from edgeclass.train import rundir  # noqa: E402

from .conftest import CLASSES, invoke, make_tree, pretrained, read_history, tiny_train_args  # noqa: E402

pytestmark = pytest.mark.slow

REPORT_FILES = ("metrics.json", "classification_report.txt", "confusion_matrix.png", "training_curves.png",
                "worst_misclassified.png")


def test_training_directory_is_complete_and_matches_the_contract(trained):
    data, out, result = trained
    run = rundir.load_training_dir(out)
    assert run.labels == CLASSES
    config = run.config
    for key in ("backbone", "alpha", "input_size", "resize", "weights", "epochs", "seed", "edgeclass_version"):
        assert key in config, key
    assert (config["backbone"], config["alpha"], config["input_size"]) == ("mobilenet_v2", 0.35, 64)
    assert (config["resize"], config["normalization"]) == ("center_crop", "model")

    split = run.split
    assert split["data_dir"] == str(data.resolve()) and split["seed"] == 42 and split["ratios"] == [0.8, 0.1, 0.1]
    paths = {name: {e["path"] for e in split[name]} for name in ("train", "val", "test")}
    assert sum(map(len, paths.values())) == 48 and not (paths["train"] & paths["test"]) and not (paths["val"] & paths["test"])
    assert all(path.exists() for path, _ in run.split_items("test"))

    dataset = json.loads((out / rundir.DATASET).read_text())
    assert dataset["fingerprint"] == config["dataset_fingerprint"]
    # The content-hash split is stratified in expectation; every class still has a photo in each split.
    for label in CLASSES:
        counts = dataset["counts"][label]
        assert counts["total"] == 16 and min(counts[s] for s in ("train", "val", "test")) >= 1, (label, counts)
        assert counts["test"] == sum(e["label"] == label for e in split["test"])
    assert split["method"] == "content-hash" and all(len(e["sha256"]) == 64 for e in split["test"])

    for name in REPORT_FILES:
        assert (out / "report" / name).stat().st_size > 0, name
    history = read_history(out)
    assert [h["phase"] for h in history].count("finetune") == 3
    assert [int(h["step"]) for h in history] == list(range(1, len(history) + 1))
    assert "test accuracy" in result.output
    # The resume-only image cache is removed once the run is complete.
    assert not list((out / "checkpoints").glob("images-*.npy"))


def test_saved_model_is_float32_softmax_on_0_255_pixels(trained):
    import keras

    data, out, _ = trained
    model = keras.models.load_model(out / rundir.MODEL)
    assert len(model.inputs) == 1 and tuple(model.inputs[0].shape) == (None, 64, 64, 3)
    assert model.inputs[0].dtype == "float32"
    assert {w.dtype for w in model.weights} == {"float32"}
    assert model.compute_dtype == "float32"
    from edgeclass.device.pipeline.images import load_image
    from edgeclass.device.bundle import ResizePolicy
    from edgeclass.device.pipeline.preprocess import resize_image

    run = rundir.load_training_dir(out)
    items = run.split_items("test") + run.split_items("train")
    x = np.stack([resize_image(load_image(p), 64, 64, ResizePolicy.CENTER_CROP) for p, _ in items]).astype(np.float32)
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    if pretrained():
        # Not one class for everything: BatchNorm runs in inference mode throughout, so
        # inference sees the same statistics training did (no lagging moving averages).
        assert len(set(probs.argmax(axis=1))) == len(CLASSES)
        assert (probs.argmax(axis=1) == [y for _, y in items]).mean() >= 0.8


def test_metrics_json_has_the_promised_fields(trained):
    _, out, _ = trained
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    test = rundir.load_training_dir(out).split["test"]
    cm = np.asarray(metrics["confusion_matrix"])
    # The figures are the test split's, consistent with each other (not merely between 0 and 1).
    assert metrics["num_images"] == len(test) == cm.sum()
    assert metrics["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-4)
    assert set(metrics["per_class"]) == set(CLASSES)
    assert set(metrics["per_class"]["circles"]) == {"precision", "recall", "f1", "support"}
    assert metrics["per_class"]["circles"]["support"] == sum(e["label"] == "circles" for e in test) == cm[0].sum()
    assert set(metrics["macro_avg"]) >= {"precision", "recall", "f1"} and set(metrics["weighted_avg"]) >= {"precision", "recall", "f1"}
    gap = metrics["train_val_gap"]
    assert gap["gap"] == pytest.approx(gap["train_accuracy"] - gap["val_accuracy"], abs=1e-3)
    assert metrics["training"]["frozen_backbone_forward_images_per_s"] > 0
    text = (out / "report" / "classification_report.txt").read_text()
    assert "precision" in text and "weighted avg" in text and "gap" in text
    if pretrained():
        assert metrics["accuracy"] >= 0.8


def _test_scores(out: Path):
    """The saved model's scores on the run's test split, computed here, as the report should have."""
    import keras

    from edgeclass.device.bundle import ResizePolicy
    from edgeclass.device.pipeline.images import load_image
    from edgeclass.device.pipeline.preprocess import resize_image

    run = rundir.load_training_dir(out)
    items = run.split_items("test")
    size = run.input_size
    x = np.stack([resize_image(load_image(p), size, size, ResizePolicy.CENTER_CROP) for p, _ in items]).astype(np.float32)
    model = keras.models.load_model(out / rundir.MODEL)
    return model.predict(x, verbose=0), np.array([y for _, y in items]), run


def test_report_measures_calibration_and_explains_images(trained):
    from edgeclass.device.pipeline import calibration

    _, out, _ = trained
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    probs, y, run = _test_scores(out)
    cal = metrics["calibration"]
    # ECE on the test split of the model as saved, 15 bins, recomputed here from the model's own scores.
    assert cal["split"] == "test" and cal["bins"] == calibration.DEFAULT_BINS
    assert cal["ece"] == pytest.approx(calibration.expected_calibration_error(*calibration.top1(probs, y)), abs=2e-4)
    assert cal["val"]["images"] == len(run.split["val"]) and 0 < cal["val"]["p_calibrated"] <= 1
    if "temperature" in cal:  # fitted on validation: the test scores after it are recomputed the same way
        after = calibration.scale_scores(probs, cal["temperature"])
        assert cal["ece_after"] == pytest.approx(calibration.expected_calibration_error(*calibration.top1(after, y)), abs=2e-4)
    else:
        assert "ece_after" not in cal and cal["decision"]
    assert (out / "report" / "reliability.png").stat().st_size > 0

    index = json.loads((out / "report" / "gradcam" / "gradcam.json").read_text())
    rows = {item["path"]: i for i, item in enumerate(run.split["test"])}
    wrong = int((probs.argmax(1) != y).sum())
    assert sum(e["kind"] == "worst" for e in index) == min(12, wrong)
    assert {e["true"] for e in index if e["kind"] == "correct"} <= set(CLASSES)
    for entry in index:
        k = rows[entry["path"]]  # every explained image is a test image, with the model's own answer and score
        assert entry["true"] == CLASSES[y[k]] and entry["predicted"] == CLASSES[probs[k].argmax()]
        assert entry["score"] == pytest.approx(probs[k].max(), abs=1e-4)
        assert (entry["kind"] == "worst") == (entry["true"] != entry["predicted"])
        for key in ("image", "heat_predicted") + (("heat_true",) if entry["kind"] == "worst" else ()):
            assert (out / "report" / "gradcam" / entry[key]).stat().st_size > 500, key
    assert (out / "report" / "index.html").stat().st_size > 10_000


def test_evaluate_reproduces_the_training_report(trained, tmp_path):
    data, out, _ = trained
    result = invoke("evaluate", out, "-o", tmp_path / "again")
    assert result.exit_code == 0, (result.output, result.exception)
    first = json.loads((out / "report" / "metrics.json").read_text())
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["accuracy"] == first["accuracy"] and again["confusion_matrix"] == first["confusion_matrix"]
    for name in ("metrics.json", "classification_report.txt", "confusion_matrix.png", "worst_misclassified.png"):
        assert (tmp_path / "again" / name).exists(), name

    # Any folder dataset: here the whole training data folder, every image evaluated.
    result = invoke("evaluate", out / rundir.MODEL, data, "-o", tmp_path / "all")
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["num_images"] == 48


def test_evaluate_refuses_classes_the_model_does_not_know(trained, tmp_path):
    _, out, _ = trained
    make_tree(tmp_path / "other", {"circles": 2, "triangles": 2})
    result = invoke("evaluate", out, tmp_path / "other")
    assert isinstance(result.exception, EdgeclassError)
    assert "class folder(s) triangles are not labels of the model (circles, squares, stripes)" in str(result.exception)


def _wait_for_epoch(out: Path, proc: subprocess.Popen, epoch: int, timeout: float = 240) -> int:
    state = out / "checkpoints" / "state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"training ended before epoch {epoch}: {proc.communicate()}"
        if state.exists():
            try:
                current = json.loads(state.read_text())
            except json.JSONDecodeError:  # pragma: no cover - state.json is replaced atomically
                current = {}
            if current.get("phase") == "finetune" and current.get("epoch", 0) >= epoch:
                return current["epoch"]
        time.sleep(0.05)
    raise AssertionError(f"no fine-tuning epoch {epoch} within {timeout} s")


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeclass.device.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_ctrl_c_and_kill_lose_nothing_with_resume(tmp_path):
    # Imbalanced on purpose (20 vs 10): class weights switch on automatically.
    data = make_tree(tmp_path / "data", {"circles": 20, "squares": 10, "stripes": 10})
    out = tmp_path / "run"
    args = ["train", data, "-o", out, *tiny_train_args(epochs=6, head_epochs=3), "--patience", "0"]

    proc = _start(*args)
    _wait_for_epoch(out, proc, 1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"interrupted: continue with 'edgeclass train --resume -o {out}" in err
    assert "Traceback" not in err
    with pytest.raises(rundir.TrainingDirError, match="incomplete training directory, missing model.keras"):
        rundir.load_training_dir(out)

    proc = _start("train", data, "-o", out, "--resume")
    done = json.loads((out / "checkpoints" / "state.json").read_text())["epoch"]
    killed_after = _wait_for_epoch(out, proc, done + 1)
    proc.kill()  # no chance to clean up: SIGKILL
    proc.communicate(timeout=60)

    result = subprocess.run([sys.executable, "-m", "edgeclass.device.cli", "train", data, "-o", out, "--resume"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"resuming fine-tuning after epoch {killed_after} of 6" in result.stderr
    assert "dataset unchanged since the run started: reusing the decoded image cache" in result.stderr
    finetune = [int(h["epoch"]) for h in read_history(out) if h["phase"] == "finetune"]
    # Epochs interrupted mid-way are redone; completed ones are never repeated.
    assert sorted(set(finetune)) == list(range(1, 7))
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert [h["epoch"] for h in state["history"] if h["phase"] == "finetune"] == list(range(1, 7))
    config = json.loads((out / rundir.CONFIG).read_text())
    assert config["class_weights_used"] is True
    assert rundir.load_training_dir(out).labels == CLASSES


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "/no/such/weights.h5"], "--weights /no/such/weights.h5: no such file"),
        (["--backbone", "mobilenet_v3_small", "--alpha", "1.0", "--weights", "imagenet"],
         "ImageNet weights file weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5 is missing"),
        (["--alpha", "0.5", "--input-size", "96", "--weights", "imagenet"],
         "ImageNet weights file mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_96_no_top.h5 is missing"),
        (["--alpha", "0.6"], "--alpha 0.6: ImageNet MobileNetV2 weights exist for alpha 0.35, 0.5"),
        (["--backbone", "resnet"], "--backbone is 'resnet', expected one of mobilenet_v2"),
        (["--split", "0.5,0.5"], "expected three fractions"),
        (["--class-weights", "maybe"], "--class-weights is 'maybe'"),
    ],
    ids=["weights-path", "v3-imagenet", "v2-imagenet-alpha", "alpha", "backbone", "split", "class-weights"],
)
def test_option_refusals_name_the_problem(tree, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    result = invoke("train", tree, "-o", tmp_path / "run", "--epochs", "0", *args)
    assert isinstance(result.exception, EdgeclassError), (result.output, result.exception)
    assert message in str(result.exception)
    if "imagenet" in args:
        assert f"put it in {tmp_path / 'empty-keras-home' / 'models'}" in str(result.exception)


def test_output_directory_refusals(trained, tree, tmp_path):
    _, out, _ = trained
    cases = [
        (["train", tree, "-o", tree / "run"], "the output directory is inside the dataset"),
        (["train", tree, "-o", out], "not empty"),
        (["train", tree, "-o", tmp_path / "nothing", "--resume"], "nothing to resume"),
        (["train", tree, "-o", out, "--resume"], "this run already finished"),
        (["train", tree], "missing -o/--output"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert isinstance(result.exception, EdgeclassError), (args, result.output, result.exception)
        assert message in str(result.exception), args
    assert not (tree / "run").exists()


def test_mobilenet_v3_minimalistic_has_no_hard_swish_and_the_full_one_warns(caplog):
    from edgeclass.train.config import Backbone, TrainConfig
    from edgeclass.train.model import build_model

    def activations(model) -> set[str]:
        found = set()
        for layer in model.get_layer("backbone").layers:
            act = getattr(layer, "activation", None)
            found.add(getattr(act, "__name__", type(layer).__name__).lower())
            found.add(layer.name.lower())
        return found

    small = TrainConfig("x", backbone=Backbone.MOBILENET_V3_SMALL, input_size=96, weights="none")
    with caplog.at_level("WARNING"):
        model = build_model(small, 3)
    assert not any("hard" in a for a in activations(model))
    assert "Edge TPU cannot run hard-swish" not in caplog.text
    full = small.with_(minimalistic=False)
    with caplog.at_level("WARNING"):
        model = build_model(full, 3)
    assert any("hard" in a for a in activations(model))
    assert "the Edge TPU cannot run hard-swish" in caplog.text
    # V3 carries its own rescaling: the input is still 0..255 pixels.
    assert model.inputs[0].shape[1:] == (96, 96, 3)


def test_train_cli_module_imports_nothing_heavy():
    probe = "import edgeclass.train.cli, sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    heavy = {m.split(".")[0] for m in json.loads(out.stdout)} & {"tensorflow", "keras", "matplotlib", "cv2"}
    assert heavy == set()


def test_without_tensorflow_train_and_evaluate_say_how_to_install(tree, tmp_path):
    block = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras'):\n"
        "            raise ImportError(f'No module named {name!r} (blocked by the test)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgeclass.device.cli import main\n"
        "sys.argv = ['edgeclass'] + sys.argv[1:]\n"
        "main()\n"
    )
    for args in (["train", str(tree), "-o", str(tmp_path / "run")], ["evaluate", str(tmp_path / "run")]):
        result = subprocess.run([sys.executable, "-c", block, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == "error: TensorFlow is not installed: pip install 'edgeclass[train]'"
    assert not (tmp_path / "run").exists()


def test_a_seeded_run_repeats_exactly_on_the_cpu(trained, tmp_path):
    """Same data, same options, same seed: the same weights bit for bit and the same training log.

    The split is a hash of (seed, photo); every crop, flip and jitter comes
    from a generator seeded by (seed, epoch, photo); Keras' own randomness
    (head shuffling, dropout) from ``keras.utils.set_random_seed``. On a GPU,
    TensorFlow's kernels may add their own non-determinism: not exercised here.
    """
    import keras

    data, out, _ = trained
    again = tmp_path / "again"
    result = invoke("train", data, "-o", again, *tiny_train_args(epochs=3))
    assert result.exit_code == 0, (result.output, result.exception)
    first = keras.saving.load_model(out / rundir.MODEL).get_weights()
    second = keras.saving.load_model(again / rundir.MODEL).get_weights()
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    losses = [[row["loss"] for row in read_history(run)] for run in (out, again)]
    assert losses[0] == losses[1]

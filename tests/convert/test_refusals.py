"""Each refusal of ``edgeclass convert``, with its message; and no half-written bundle ever."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeclass.convert.compare import AccuracyDropError, check_gate, compare
from edgeclass.convert.samples import SampleError, stratified_sample

from ..conftest import run_edgeclass
from .conftest import copy_run


def _entries(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()}


def test_cli_module_imports_nothing_heavy():
    probe = ("import sys, json, edgeclass.convert.cli, edgeclass.convert.edgetpu_ops, edgeclass.convert.pipeline\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'matplotlib'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_incomplete_training_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "labels.txt").write_text("a\nb\n")
    proc = run_edgeclass("convert", run, "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {run}: incomplete training directory, missing model.keras, config.json, split.json "
        "(did training finish? 'edgeclass train --resume' continues an interrupted run)"
    )
    assert _entries(tmp_path) == {"run"}


def test_missing_output_option(tmp_path):
    proc = run_edgeclass("convert", tmp_path)
    assert proc.returncode == 2 and "missing -o/--output" in proc.stderr


def test_stratified_sample_covers_every_class_evenly():
    items = [(Path(f"a{i}.jpg"), 0) for i in range(50)] + [(Path(f"b{i}.jpg"), 1) for i in range(3)] + [(Path("c.jpg"), 2)]
    chosen = stratified_sample(items, 10, ["a", "b", "c"], seed=1)
    counts = np.bincount([label for _, label in chosen], minlength=3)
    assert counts.tolist() == [6, 3, 1]
    assert stratified_sample(items, 10, ["a", "b", "c"], seed=1) == chosen  # reproducible
    assert len(stratified_sample(items, 500, ["a", "b", "c"])) == len(items)


def test_representative_set_missing_a_class(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    split = json.loads((run / "split.json").read_text())
    split["train"] = [e for e in split["train"] if e["label"] != "green_disc"]
    (run / "split.json").write_text(json.dumps(split))
    proc = run_edgeclass("convert", run, "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert f"error: {run / 'split.json'}: the train split has no images of green_disc;" in proc.stderr
    assert "needs every class" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_calibration_size_below_class_count():
    items = [(Path("a.jpg"), 0), (Path("b.jpg"), 1), (Path("c.jpg"), 2)]
    with pytest.raises(SampleError, match="--calibration-size 2 is smaller than the 3 classes"):
        stratified_sample(items, 2, ["a", "b", "c"])


def test_existing_output_without_force(tiny_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_edgeclass("convert", tiny_run, "-o", out)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {out}: already exists; choose another output directory or pass --force to replace it"
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_model_with_two_inputs(tiny_run, tmp_path):
    import keras

    run = copy_run(tiny_run, tmp_path / "run")
    a, b = keras.Input((32, 32, 3)), keras.Input((4,))
    x = keras.layers.GlobalAveragePooling2D()(a)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([x, b]))
    keras.Model([a, b], out).save(run / "model.keras")
    proc = run_edgeclass("convert", run, "-o", tmp_path / "out", timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {run / 'model.keras'}: the model has 2 inputs; an image classifier bundle needs exactly one (H, W, 3) image input"
    )
    assert not (tmp_path / "out").exists()


def test_gate_message_names_the_validation_split_and_both_conditions():
    comparison = compare(["a", "b"], [0, 0, 1, 1], {"float": np.eye(2)[[0, 0, 1, 1]], "int8": np.eye(2)[[0, 0, 0, 0]]},
                         split="val")
    assert comparison.drop_pp == pytest.approx(50.0) and comparison.agreement == pytest.approx(0.5)
    with pytest.raises(AccuracyDropError) as caught:
        check_gate(comparison, 1.0, 0.97)
    assert str(caught.value) == (
        "int8 on the 4 validation images: accuracy 50.00% is 50.00 points below float 100.00% (more than --max-drop 1); "
        "top-1 agreement with float is 50.00% (below --min-agreement 97%); no bundle written")
    assert "seed" not in str(caught.value) and "test" not in str(caught.value)
    with pytest.raises(AccuracyDropError, match=r"50\.00 points below float 100\.00% \(within --max-drop 50\); top-1 "
                                                r"agreement with float is 50\.00% \(below --min-agreement 60%\); no bundle"):
        check_gate(comparison, 50.0, 0.6)  # the drop is at its limit; agreement alone refuses
    record = check_gate(comparison, 50.0, 0.5)  # both at their limits: accepted
    assert record == {"split": "val", "images": 4, "float_accuracy": 1.0, "int8_accuracy": 0.5, "drop_pp": 50.0,
                      "agreement": 0.5, "max_drop_pp": 50.0, "min_agreement": 0.5, "one_image_pp": 25.0, "passed": True}


def test_a_lost_image_and_a_gained_one_cancel_in_accuracy_but_not_in_agreement():
    """Why the gate has two conditions: int8 changed 2 of 4 answers, accuracy did not move."""
    y = [0, 0, 1, 1]
    comparison = compare(["a", "b"], y, {"float": np.eye(2)[[0, 1, 1, 1]], "int8": np.eye(2)[[1, 0, 1, 1]]}, split="val")
    assert comparison.drop_pp == pytest.approx(0.0) and comparison.agreement == pytest.approx(0.5)
    with pytest.raises(AccuracyDropError, match="agreement"):
        check_gate(comparison, 1.0, 0.97)


@pytest.mark.slow
def test_collapsed_int8_accuracy_refused_and_nothing_half_written(tiny_run, tmp_path, monkeypatch):
    """An int8 model that lost its accuracy (here: really converted from an untrained copy of the
    network, as if the wrong weights were quantized) is refused; nothing is written, and an
    existing bundle stays untouched even with --force."""
    import keras

    import edgeclass.convert.quantize as quantize
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    from .rundir_factory import tiny_cnn

    keras.utils.set_random_seed(123)
    broken = quantize.export_saved_model(tiny_cnn(32, 3), tmp_path / "untrained")
    real_convert = quantize.convert_int8
    monkeypatch.setattr(quantize, "convert_int8", lambda saved, *a, **k: real_convert(broken, *a, **k))
    out_parent = tmp_path / "bundles"
    out_parent.mkdir()
    old = out_parent / "flowers"
    old.mkdir()
    (old / "bundle.json").write_text("{}")

    with pytest.raises(AccuracyDropError, match=r"int8 on the 12 validation images: accuracy .* points below float .*no bundle written"):
        convert_training_dir(tiny_run, out_parent / "new", ConvertOptions(calibration_size=9))
    with pytest.raises(AccuracyDropError):
        convert_training_dir(tiny_run, old, ConvertOptions(calibration_size=9, force=True))
    assert _entries(out_parent) == {"flowers"}  # no new bundle, no .partial leftovers
    assert (old / "bundle.json").read_text() == "{}"

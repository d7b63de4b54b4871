"""A tiny really-trained model, really converted, run by the device's own code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeclass.device.bundle import load_bundle
from edgeclass.device.pipeline.classifier import EdgeTPU, open_classifier
from edgeclass.device.pipeline.images import load_image
from edgeclass.device.pipeline.preprocess import Preprocessor

from ..conftest import run_edgeclass
from .rundir_factory import LABELS

pytestmark = pytest.mark.slow


def test_bundle_loads_on_the_device_and_agrees_with_float_keras(tiny_bundle, tiny_run):
    import keras

    from edgeclass.device.pipeline.preprocess import resize_image

    bundle_dir, _ = tiny_bundle
    bundle = load_bundle(bundle_dir)
    classifier = open_classifier(bundle, num_threads=1, edgetpu=EdgeTPU.OFF)
    preprocess = Preprocessor(bundle.input)
    split = json.loads((tiny_run / "split.json").read_text())
    model = keras.saving.load_model(tiny_run / "model.keras")
    agree = correct = 0
    for item in split["test"]:
        # Full-size photo in, as on the Pi: the Preprocessor does the resize.
        rgb = load_image(f"{split['data_dir']}/{item['path']}")
        int8_top = int(np.argmax(classifier.scores(preprocess(rgb))))
        small = resize_image(rgb, 32, 32, bundle.input.resize)[None].astype(np.float32)
        float_top = int(np.argmax(keras.ops.convert_to_numpy(model(small, training=False))))
        agree += int8_top == float_top
        correct += LABELS[int8_top] == item["label"]
    n = len(split["test"])
    assert agree / n >= 0.9
    assert correct / n >= 0.8
    assert abs(bundle.metrics["agreement"] - agree / n) < 1e-6
    assert abs(bundle.metrics["int8_accuracy"] - correct / n) < 1e-6


def test_manifest_records_real_quantization_metrics_and_provenance(tiny_bundle, tiny_run):
    bundle_dir, result = tiny_bundle
    bundle = load_bundle(bundle_dir)
    assert bundle.input.dtype == "uint8" and bundle.output.dtype == "uint8"
    # Normalisation stays inside the model and calibration pins the input range to
    # the full 0..255, so the pixel bytes are the input tensor unchanged.
    assert bundle.input.normalization == "model"
    assert bundle.input.scale == pytest.approx(1.0) and bundle.input.zero_point == 0
    assert bundle.input.resize.value == "center_crop"
    m = bundle.metrics
    # The figures are the real ones: recomputed here from the float model on the same images, with a floor.
    expected = {split: _float_accuracy(tiny_run, split) for split in ("val", "test")}
    assert m["float_accuracy"] == pytest.approx(expected["test"]) and m["float_accuracy"] >= 0.8
    assert m["float_tflite_accuracy"] == pytest.approx(m["float_accuracy"])
    assert m["int8_accuracy"] >= 0.8 and m["agreement"] >= 0.9
    gate = m["gate"]
    assert gate["split"] == "val" and gate["images"] == 12 and gate["passed"] is True
    assert gate["float_accuracy"] == pytest.approx(expected["val"])
    assert gate["agreement"] >= 0.97 and gate["drop_pp"] <= 1.0
    assert (gate["max_drop_pp"], gate["min_agreement"]) == (1.0, 0.97)
    assert m["test_images"] == 30 and set(m["per_class"]) == set(LABELS)
    assert m["per_class"]["green_disc"]["images"] == 10
    assert m["model_sizes"]["int8_tflite_bytes"] < m["model_sizes"]["float_tflite_bytes"]
    prov = bundle.manifest["provenance"]
    assert prov["backbone"] == "tiny_cnn" and prov["dataset_fingerprint"] == "test-fingerprint"
    assert prov["conversion"]["calibration_size"] == 30 and prov["conversion"]["io"] == "uint8"
    edgetpu = bundle.manifest["edgetpu"]
    assert edgetpu["compiled"] is False and edgetpu["preflight"]["fully_mapped"] is True
    assert bundle.edgetpu_model_path is None


def _float_accuracy(run, split: str) -> float:
    import keras

    from .rundir_factory import load_split

    doc = json.loads((run / "split.json").read_text())
    x, y = load_split(Path(doc["data_dir"]), doc[split], 32)
    model = keras.saving.load_model(run / "model.keras")
    return float((np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), 1) == y).mean())


def test_report_holds_side_by_side_confusions_and_per_class_deltas(tiny_bundle):
    bundle_dir, result = tiny_bundle
    report = bundle_dir / "report"
    assert (report / "confusion.png").stat().st_size > 1000
    metrics = json.loads((report / "metrics.json").read_text())
    assert (report / "confusion_val.png").stat().st_size > 1000
    assert set(metrics["confusion_matrices"]) == {"float", "float_tflite", "int8"}
    assert np.array(metrics["confusion_matrices"]["int8"]).sum() == 30
    assert np.array(metrics["validation"]["confusion_matrices"]["int8"]).sum() == 12
    table = (report / "comparison.txt").read_text()
    assert "delta (pp)" in table and "agreement" in table
    assert table.index("validation split (the gate)") < table.index("test split (reported only")
    assert result.comparison_text == table


def test_predict_command_runs_the_converted_bundle(tiny_bundle, tiny_dataset):
    bundle_dir, _ = tiny_bundle
    data, split = tiny_dataset
    image = data / split["test"][0]["path"]
    proc = run_edgeclass("predict", "-b", bundle_dir, image, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["label"] == split["test"][0]["label"]


def test_int8_io_per_tensor_and_device_normalisation(tiny_run, tmp_path):
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    out = tmp_path / "b"
    convert_training_dir(tiny_run, out, ConvertOptions(io="int8", per_tensor=True, normalization="device",
                                                      calibration_size=12))
    bundle = load_bundle(out)
    assert bundle.input.dtype == "int8" and bundle.output.dtype == "int8"
    # The Rescaling(1/127.5, -1) layer moved to the device: (pixel - 127.5) / 127.5.
    assert bundle.input.normalization == "device"
    assert bundle.input.mean == pytest.approx((127.5,) * 3) and bundle.input.std == pytest.approx((127.5,) * 3)
    assert bundle.manifest["provenance"]["conversion"]["weights"] == "per-tensor"
    assert bundle.metrics["agreement"] >= 0.9
    classifier = open_classifier(bundle, num_threads=1, edgetpu=EdgeTPU.OFF)
    scores = classifier.scores(Preprocessor(bundle.input)(np.zeros((50, 70, 3), np.uint8)))
    assert scores.shape == (3,) and abs(scores.sum() - 1) < 0.05


def test_float_bundle_and_its_preflight_verdict(tiny_run, tmp_path):
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    result = convert_training_dir(tiny_run, tmp_path / "f", ConvertOptions(float_model=True))
    bundle = load_bundle(tmp_path / "f")
    assert bundle.input.dtype == "float32" and bundle.output.dtype == "float32"
    assert "int8_accuracy" not in bundle.metrics
    assert bundle.metrics["float_tflite_accuracy"] == pytest.approx(bundle.metrics["float_accuracy"])
    assert bundle.metrics["agreement"] == 1.0
    # A float model is exactly what the Edge TPU compiler calls "Model not quantized".
    assert result.preflight.on_tpu == 0 and "not quantized" in result.preflight.first_cpu_op.reason.lower()


def test_convert_command_end_to_end(tiny_run, tmp_path):
    out = tmp_path / "cli-bundle"
    proc = run_edgeclass("convert", tiny_run, "-o", out, "--calibration-size", "9", "--edgetpu-check", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "agreement" in proc.stdout and "pre-flight" in proc.stdout
    assert "gate        validation: " in proc.stdout and "on 12 images: passed" in proc.stdout
    assert "on 30 images (reported, not gated)" in proc.stdout
    assert "Mapped to Edge TPU" in proc.stdout  # the per-op table of --edgetpu-check
    assert "calibrated  ECE float " in proc.stdout and "page: " in proc.stdout
    assert "calibrating" in proc.stderr  # the progress bars
    # The converter's and LiteRT's native lines are not for users (they go to the -v debug log).
    assert "fully_quantize" not in proc.stderr and "XNNPACK" not in proc.stderr, proc.stderr
    assert load_bundle(out).manifest["provenance"]["conversion"]["calibration_size"] == 9
    # The pre-flight alone, on the bundle just written (no TensorFlow needed for this one).
    check = run_edgeclass("convert", out, "--edgetpu-check")
    assert check.returncode == 0 and "model.tflite: 7 of 7 ops will run on the Edge TPU (fully mapped)" in check.stdout


def test_default_mobilenet_v2_graph_is_fully_mapped(tiny_dataset, tmp_path):
    """The default backbone (MobileNetV2 alpha 0.35, normalisation inside) converts to a fully mapped int8 graph.

    Trained for one epoch from random weights: its BatchNorm statistics lag, so it
    may predict one class for everything. Accuracy is not the point here (hence
    --max-drop 100); the converted graph's operators and tensors are.
    """
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    from .rundir_factory import make_training_dir

    data, split = tiny_dataset
    run = make_training_dir(tmp_path / "mnv2", data, split, kind="mobilenet_v2", size=64, epochs=1)
    result = convert_training_dir(run, tmp_path / "b", ConvertOptions(calibration_size=6, max_drop=100))
    assert result.preflight.fully_mapped, result.preflight.summary()
    names = {v.name for v in result.preflight.ops}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED", "SOFTMAX"} <= names
    # The int8 versions this converter writes; each one is in a model Coral compiled (edgetpu_versions).
    versions = result.preflight.to_json()["op_versions"]
    assert (versions["CONV_2D"], versions["FULLY_CONNECTED"], versions["MUL"], versions["MEAN"]) == (3, 4, 2, 2)
    assert result.preflight.unverified == [] and result.preflight.refused is None
    assert load_bundle(tmp_path / "b").manifest["edgetpu"]["preflight"]["ops_on_tpu"] == result.preflight.total

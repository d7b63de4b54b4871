"""Temperature scaling folded into the last layer: the int8 model on the device emits the calibrated scores."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edgeclass.device.bundle import load_bundle
from edgeclass.device.pipeline import calibration
from edgeclass.device.pipeline.classifier import EdgeTPU, open_classifier
from edgeclass.device.pipeline.images import load_image
from edgeclass.device.pipeline.preprocess import Preprocessor, resize_image

from .conftest import copy_run

pytestmark = pytest.mark.slow


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _test_split(run):
    split = json.loads((run / "split.json").read_text())
    labels = (run / "labels.txt").read_text().split()
    return [(f"{split['data_dir']}/{item['path']}", labels.index(item["label"])) for item in split["test"]]


def test_fold_divides_the_logits_exactly(tiny_run):
    import keras

    from edgeclass.train.calibrate import fold_temperature

    model = keras.saving.load_model(tiny_run / "model.keras")
    x = np.stack([resize_image(load_image(p), 32, 32, "center_crop") for p, _ in _test_split(tiny_run)]).astype(np.float32)
    before = np.asarray(model.predict(x, verbose=0), np.float64)
    layer = fold_temperature(model, 2.5, x[:4])
    after = np.asarray(model.predict(x, verbose=0), np.float64)
    assert layer == model.layers[-1].name
    np.testing.assert_allclose(after, calibration.scale_scores(before, 2.5), atol=2e-6)
    assert np.array_equal(after.argmax(1), before.argmax(1)) and after.max(1).mean() < before.max(1).mean()


def test_convert_folds_the_temperature_and_the_device_sees_calibrated_scores(tiny_run, tmp_path):
    import keras

    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    run = copy_run(tiny_run, tmp_path / "run")
    # The tiny model is sure of everything; with its logits divided by 6 it is as under-confident as label
    # smoothing leaves a model, so the temperature has something to correct that int8 rounding does not hide.
    model = keras.saving.load_model(run / "model.keras")
    dense = model.layers[-1]
    dense.set_weights([w / 6 for w in dense.get_weights()])
    model.save(run / "model.keras")
    model_hash = _sha(run / "model.keras")
    out = tmp_path / "bundle"
    result = convert_training_dir(run, out, ConvertOptions(calibration_size=30, temperature="on"))
    assert _sha(run / "model.keras") == model_hash  # the trained model is left as it was

    report = json.loads((out / "report" / "metrics.json").read_text())["calibration"]
    bundle = load_bundle(out)
    t = report["temperature"]
    assert t < 0.5  # under-confident scores are sharpened
    assert bundle.metrics["calibration"]["temperature"] == t and report["fitted_on"] == "val"
    assert report["decision"] == "asked for" and report["folded_into"]

    # The device's own path on the full photos: decode, preprocess, int8 interpreter.
    classifier = open_classifier(bundle, num_threads=1, edgetpu=EdgeTPU.OFF)
    preprocess = Preprocessor(bundle.input)
    items = _test_split(run)
    device = np.stack([classifier.scores(preprocess(load_image(p))) for p, _ in items])
    y = np.array([label for _, label in items])
    # The bundle's recorded int8 ECE is the one of the scores the device emits.
    assert report["splits"]["test"]["int8"]["ece"] == pytest.approx(
        calibration.expected_calibration_error(*calibration.top1(device, y)), abs=1e-6)
    assert report["ece_int8"] == report["splits"]["test"]["int8"]["ece"]
    assert {"float_before", "float", "int8_before", "int8"} <= set(report["splits"]["test"])

    # They are the float model's scores divided by T before the softmax, up to int8 rounding.
    model = keras.saving.load_model(run / "model.keras")
    x = np.stack([resize_image(load_image(p), 32, 32, bundle.input.resize) for p, _ in items]).astype(np.float32)
    trained = np.asarray(model.predict(x, verbose=0), np.float64)
    scaled = calibration.scale_scores(trained, t)
    assert np.abs(device - scaled).max() < 0.05
    assert np.abs(device - scaled).mean() < np.abs(device - trained).mean() / 4
    assert device.max(1).mean() > trained.max(1).mean() + 0.1
    assert report["ece_after"] == pytest.approx(
        calibration.expected_calibration_error(*calibration.top1(scaled, y)), abs=0.02)
    assert "temperature" in result.calibration_text and f"{t:.3f}" in result.calibration_text


def test_no_temperature_for_a_model_trained_on_validation(tiny_run, tmp_path):
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    run = copy_run(tiny_run, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "refit": True}))
    convert_training_dir(run, tmp_path / "bundle", ConvertOptions(calibration_size=12, temperature="on", float_model=True))
    report = json.loads((tmp_path / "bundle" / "report" / "metrics.json").read_text())["calibration"]
    assert "temperature" not in report and "trained on the validation split" in report["decision"]
    assert report["ece"] == report["splits"]["test"]["float"]["ece"] and "ece_after" not in report

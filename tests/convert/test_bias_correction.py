"""Bias correction on a really trained, really converted tiny CNN, measured by the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclass.device.bundle import load_bundle
from edgeclass.device.pipeline.images import load_image
from edgeclass.device.bundle import InputSpec, ResizePolicy
from edgeclass.device.pipeline.preprocess import resize_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(tiny_run, tmp_path_factory):
    """(int8 bytes, float bytes, resized train images, int8 input spec, float input spec) for ``tiny_run``."""
    from edgeclass.convert import quantize
    from edgeclass.convert.pipeline import specs_from_model
    from edgeclass.train.rundir import load_training_dir

    td = load_training_dir(tiny_run)
    model = quantize.load_model(td.model_path)
    work = tmp_path_factory.mktemp("bias")
    saved = quantize.export_saved_model(model, work / "saved")
    size = td.input_size
    images = np.stack([resize_image(load_image(path), size, size, ResizePolicy.CENTER_CROP)
                       for path, _ in td.split_items("train")[::2]])
    (work / "f.tflite").write_bytes(quantize.convert_float(saved))
    (work / "q.tflite").write_bytes(quantize.convert_int8(saved, images))
    specs = [specs_from_model(work / name, ResizePolicy.CENTER_CROP)[0] for name in ("q.tflite", "f.tflite")]
    return (work / "q.tflite").read_bytes(), (work / "f.tflite").read_bytes(), images, specs[0], specs[1]


def _buffers(model: bytes) -> list[bytes]:
    from edgeclass.convert.tflite_graph import _schema

    root = _schema().Model.GetRootAsModel(model, 0)
    return [root.Buffers(i).DataAsNumpy().tobytes() if root.Buffers(i).DataLength() else b""
            for i in range(root.BuffersLength())]


def test_correction_removes_the_per_channel_shift_and_touches_only_biases(converted):
    from edgeclass.convert.bias_correction import correct_biases
    from edgeclass.convert.tflite_graph import _schema

    int8, float_model, images, int8_spec, float_spec = converted
    corrected, first = correct_biases(int8, float_model, images, int8_spec, float_spec)
    assert first is not None and first.layers >= 3 and first.images == len(images)
    assert first.mean_abs_shift > 0, "int8 rounding left no measurable shift: the test model is too easy"
    assert first.sweeps == 2 and first.last_sweep_shift < first.mean_abs_shift
    # Measured again on the returned model, what is left of the shift is much smaller.
    _, again = correct_biases(corrected, float_model, images, int8_spec, float_spec, sweeps=1)
    assert again.mean_abs_shift < 0.6 * first.mean_abs_shift

    # Same size, and every changed buffer is an int32 bias vector.
    assert len(corrected) == len(int8)
    root = _schema().Model.GetRootAsModel(int8, 0)
    graph = root.Subgraphs(0)
    bias_buffers = {graph.Tensors(i).Buffer() for i in range(graph.TensorsLength())
                    if graph.Tensors(i).Type() == _schema().TensorType.INT32}
    changed = [i for i, (a, b) in enumerate(zip(_buffers(int8), _buffers(corrected))) if a != b]
    assert changed and set(changed) <= bias_buffers


def test_corrected_model_tracks_the_float_model_more_closely(converted, tmp_path):
    """On the calibration images: scores of the corrected int8 model are closer to float TFLite's."""
    from edgeclass.convert.bias_correction import correct_biases
    from edgeclass.convert.pipeline import specs_from_model
    from edgeclass.device.pipeline.classifier import Classifier
    from edgeclass.device.pipeline.preprocess import Preprocessor

    int8, float_model, images, int8_spec, float_spec = converted
    corrected, _ = correct_biases(int8, float_model, images, int8_spec, float_spec)

    def scores(model: bytes, name: str) -> np.ndarray:
        path = tmp_path / name
        path.write_bytes(model)
        input_spec, output_spec = specs_from_model(path, ResizePolicy.CENTER_CROP)
        classifier, prep = Classifier(path, input_spec, output_spec), Preprocessor(input_spec)
        return np.stack([classifier.scores(prep(image)) for image in images])

    reference = scores(float_model, "f.tflite")
    before = np.abs(scores(int8, "q.tflite") - reference).sum(1).mean()
    after = np.abs(scores(corrected, "c.tflite") - reference).sum(1).mean()
    assert after <= before


def test_models_that_do_not_pair_up_are_left_alone(converted, tmp_path):
    from edgeclass.convert.bias_correction import correct_biases

    from ..device.tinymodel import build_colour_classifier

    int8, _, images, int8_spec, _ = converted
    other = build_colour_classifier(size=int8_spec.height)  # a one-layer model: the layers do not pair up
    float_spec = InputSpec(height=int8_spec.height, width=int8_spec.width, dtype="uint8")
    result, report = correct_biases(int8, other, images[:4], int8_spec, float_spec)
    assert result == int8 and report is None


def test_manifest_records_the_correction_and_it_can_be_turned_off(tiny_bundle, tiny_run, tmp_path):
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    on = load_bundle(tiny_bundle[0]).manifest["provenance"]["conversion"]["bias_correction"]
    assert on["layers"] >= 3 and on["images"] == 30  # tiny_bundle calibrates on 30 images, all used
    convert_training_dir(tiny_run, tmp_path / "plain", ConvertOptions(calibration_size=30, bias_correction=False))
    plain = load_bundle(tmp_path / "plain")
    assert plain.manifest["provenance"]["conversion"]["bias_correction"] is None
    assert plain.model_path.read_bytes() != load_bundle(tiny_bundle[0]).model_path.read_bytes()

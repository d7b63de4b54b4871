"""int8-input models (what ``convert --io int8`` makes) on the device path: bundle -> LUT -> interpreter -> scores.

The model is the tiny colour classifier with int8 input and output tensors,
written without TensorFlow (tests/device/tinymodel.py); the bundle carries the
manifest ``convert --io int8`` writes for it (input scale 1, zero point -128,
normalisation inside the model; output scale 1/256, zero point -128).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeclass.device.bundle import InputSpec, OutputSpec, load_bundle, write_bundle
from edgeclass.device.pipeline.classifier import open_classifier
from edgeclass.device.pipeline.interpreter import make_interpreter
from edgeclass.device.pipeline.preprocess import Preprocessor

from ..conftest import run_edgeclass
from .conftest import colour_frame
from .tinymodel import COLOURS, write_colour_classifier


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    work = tmp_path_factory.mktemp("int8")
    model, labels = write_colour_classifier(work, io="int8")
    details = make_interpreter(model).get_input_details()[0]
    assert np.dtype(details["dtype"]) == np.int8 and details["quantization"] == (1.0, -128)
    return write_bundle(
        work / "bundle", model=model, labels=labels.read_text().split(),
        input_spec=InputSpec(height=32, width=32, dtype="int8", scale=1.0, zero_point=-128),
        output_spec=OutputSpec(size=3, dtype="int8", scale=1 / 256, zero_point=-128, scores="probabilities"),
        provenance={"made_by": "tests: convert --io int8 manifest"})


def test_int8_input_is_the_pixel_byte_minus_128_through_the_lut(int8_bundle):
    b = load_bundle(int8_bundle)
    assert (b.input.dtype, b.input.zero_point, b.output.dtype) == ("int8", -128, "int8")
    preprocess = Preprocessor(b.input)
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)  # the input size: no resize
    tensor = preprocess(frame)
    assert tensor.dtype == np.int8 and tensor.shape == (1, 32, 32, 3)
    assert np.array_equal(tensor[0].astype(int), frame.astype(int) - 128)


def test_int8_bundle_classifies_like_the_uint8_one(int8_bundle, colour_bundle):
    int8, uint8 = load_bundle(int8_bundle), load_bundle(colour_bundle)
    c8, cu = open_classifier(int8), open_classifier(uint8)
    p8, pu = Preprocessor(int8.input), Preprocessor(uint8.input)
    for seed, name in enumerate(COLOURS):
        frame = colour_frame(name, seed=seed)
        s8, su = c8.scores(p8(frame)), cu.scores(pu(frame))
        assert s8.dtype == np.float32 and int8.labels[int(np.argmax(s8))] == name and s8.max() > 0.9
        assert np.allclose(s8, su, atol=1 / 256 + 1e-6)  # the same maths on the int8 grid


def test_edgeclass_run_with_an_int8_bundle(int8_bundle, colour_video):
    result = run_edgeclass("run", "-b", int8_bundle, "-s", colour_video, "-f", "jsonl")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["red"] * 10 + ["green"] * 10 + ["blue"] * 10
    assert all(0.9 < r["score"] <= 1.0 for r in rows)

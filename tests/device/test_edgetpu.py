"""Edge TPU routing, with Coral's real Edge-TPU-compiled models.

No Edge TPU or libedgetpu exists on this machine, so what is exercised is
everything up to the delegate: detecting a compiled model, refusing it with a
clear message, falling back to the CPU model, and (with the library's presence
faked) the delegate failing to attach. Actually running on a TPU could not be
exercised here.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from edgeclass.device.pipeline import classifier as classifier_mod
from edgeclass.device.pipeline import interpreter as interpreter_mod
from edgeclass.device.bundle import load_bundle, sha256_file
from edgeclass.device.pipeline.wrap import create_bundle_from_model
from edgeclass.device.pipeline.classifier import EdgeTPU, open_classifier
from edgeclass.device.errors import BundleError, ModelError
from edgeclass.device.pipeline.interpreter import has_edgetpu_op, make_interpreter

from ..conftest import run_edgeclass

pytestmark = pytest.mark.skipif(interpreter_mod.edgetpu_runtime_error() is None,
                                reason="an Edge TPU runtime is installed here; these tests cover its absence")


@pytest.fixture(scope="module")
def coral(shared_data):
    return shared_data / "coral"


@pytest.fixture(scope="module")
def tpu_bundle(coral, tmp_path_factory):
    """Coral's MobileNetV1 0.25 with its Edge TPU twin."""
    return create_bundle_from_model(
        coral / "mobilenet_v1_0.25_128_quant.tflite", coral / "imagenet_labels.txt",
        tmp_path_factory.mktemp("tpu") / "b", edgetpu_model=coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")


def test_compiled_models_are_recognised(coral):
    assert has_edgetpu_op(coral / "mobilenet_v1_0.5_160_quant_edgetpu.tflite")
    assert not has_edgetpu_op(coral / "mobilenet_v1_0.5_160_quant.tflite")


@pytest.mark.parametrize("name", ["mobilenet_v1_0.25_128_quant_edgetpu.tflite", "mobilenet_v1_0.5_160_quant_edgetpu.tflite"])
def test_compiled_model_without_runtime_is_a_clear_error(coral, name):
    with pytest.raises(ModelError, match=r"compiled for the Edge TPU \(contains edgetpu-custom-op\) but the Edge TPU runtime "
                                         r"is not available: libedgetpu\.so\.1 not loadable.*use the CPU model"):
        make_interpreter(coral / name)


def test_auto_falls_back_to_cpu_and_says_so_once(tpu_bundle, caplog):
    b = load_bundle(tpu_bundle)
    assert b.edgetpu_model_path is not None
    with caplog.at_level(logging.INFO):
        c = open_classifier(b, edgetpu=EdgeTPU.AUTO)
    assert not c.on_edgetpu and c.model_path.name == "model.tflite"
    warnings = [r.getMessage() for r in caplog.records if "Edge TPU" in r.getMessage()]
    assert warnings == ["Edge TPU model present but libedgetpu.so.1 not loadable "
                        f"({interpreter_mod.edgetpu_runtime_error().split('(', 1)[1][:-1]}): running model.tflite on the CPU"]


def test_on_requires_the_tpu(tpu_bundle, colour_bundle):
    with pytest.raises(ModelError, match=r"model_edgetpu\.tflite: --edgetpu on, but libedgetpu\.so\.1 not loadable"):
        open_classifier(load_bundle(tpu_bundle), edgetpu=EdgeTPU.ON)
    with pytest.raises(BundleError, match="the bundle has no model_edgetpu.tflite"):
        open_classifier(load_bundle(colour_bundle), edgetpu=EdgeTPU.ON)


def test_cli_refuses_a_bundle_whose_cpu_model_is_compiled(coral, tpu_bundle, tmp_path):
    """A hand-made bundle with the compiled model in the CPU slot: one clear line, exit 2."""
    b = tmp_path / "b"
    shutil.copytree(tpu_bundle, b)
    shutil.copyfile(coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", b / "model.tflite")
    manifest = json.loads((b / "bundle.json").read_text())
    manifest["files"]["model.tflite"] = sha256_file(b / "model.tflite")
    (b / "bundle.json").write_text(json.dumps(manifest))
    result = run_edgeclass("predict", "-b", b, "--edgetpu", "off", coral / "images" / "cat.bmp")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "compiled for the Edge TPU" in last and "model.tflite" in last
    assert "Traceback" not in result.stderr


def test_delegate_that_fails_to_attach_is_a_clear_error(tpu_bundle, monkeypatch):
    """Fakes only the hardware: the library 'loads' but the delegate cannot attach (no device plugged in)."""
    monkeypatch.setattr(interpreter_mod, "edgetpu_runtime_error", lambda: None)
    monkeypatch.setattr(classifier_mod, "edgetpu_runtime_error", lambda: None)
    real_find = interpreter_mod.find_backend

    def backend_without_device(name=None):
        backend = real_find(name)

        def load_delegate(library, options=None):
            raise ValueError(f"Failed to load delegate from {library}")

        return interpreter_mod.Backend(backend.name, backend.interpreter_class, load_delegate)

    monkeypatch.setattr(classifier_mod, "find_backend", backend_without_device)
    b = load_bundle(tpu_bundle)
    with pytest.raises(ModelError, match="the Edge TPU delegate failed to load .* is the Coral device plugged in"):
        open_classifier(b, edgetpu=EdgeTPU.ON)
    # auto: the same failure falls back to the CPU model.
    c = open_classifier(b, edgetpu=EdgeTPU.AUTO)
    assert not c.on_edgetpu

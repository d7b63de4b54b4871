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


# -- auto mode tries the Edge TPU again ---------------------------------------------
#
# What is real: Coral's compiled models, the interpreter, the dlopen probe of a
# libedgetpu.so.1 file (first garbage, then a real ELF library that is not the
# runtime), the frame loop on a real video. What cannot be exercised without a
# Coral: libedgetpu's delegate attaching and running the compiled model. For
# the swap itself the Edge TPU is faked below: its "delegate" is the CPU twin.


@pytest.fixture()
def fake_libedgetpu(tmp_path, monkeypatch):
    """A libedgetpu.so.1 that fails to load (not an ELF file), at an absolute path the probe uses."""
    library = tmp_path / "libedgetpu.so.1"
    library.write_bytes(b"not a shared library\n" * 10)
    monkeypatch.setattr(interpreter_mod, "EDGETPU_LIBRARY", str(library))
    return library


def _loadable_non_delegate(library) -> None:
    """Replace the fake with a real shared library that is not a TFLite delegate (Python's own _ctypes)."""
    import _ctypes

    shutil.copyfile(_ctypes.__file__, library)


def _runner(bundle_path, video, retry):
    from edgeclass.device.pipeline.config import SourceConfig
    from edgeclass.device.pipeline.loop import Output, RunLimits, Runner

    class Seen(Output):
        def __init__(self):
            self.backends = []

        def write(self, frame, decision):
            self.backends.append(runner.classifier.on_edgetpu)

    b = load_bundle(bundle_path)
    seen = Seen()
    runner = Runner(b, open_classifier(b, edgetpu=EdgeTPU.AUTO),
                    SourceConfig(source=str(video), loop=True, realtime=True, fps=60),
                    outputs=[seen], limits=RunLimits(duration=1.5), edgetpu_retry=retry)
    return runner, seen


@pytest.fixture(scope="module")
def coral_video(coral, tmp_path_factory):
    import cv2

    from .conftest import write_video

    frames = [cv2.cvtColor(cv2.imread(str(coral / "images" / "cat.bmp")), cv2.COLOR_BGR2RGB)] * 5
    return write_video(tmp_path_factory.mktemp("coral-video") / "cat.avi", frames)


def test_auto_retries_the_edge_tpu_now_and_then_and_stays_on_the_cpu_while_it_cannot_load(
        tpu_bundle, coral_video, fake_libedgetpu, caplog):
    with caplog.at_level(logging.DEBUG, logger="edgeclass"):
        runner, seen = _runner(tpu_bundle, coral_video, retry=0.2)
        assert runner.edgetpu_retry is not None  # auto fell back, so it will try again
        runner.run()
        attempts = runner.edgetpu_retry.attempts
        assert attempts >= 4 and seen.backends and not any(seen.backends)
        # The library becomes loadable, but it is not the Edge TPU runtime: still the CPU.
        _loadable_non_delegate(fake_libedgetpu)
        runner.run()
    assert runner.edgetpu_retry.attempts >= attempts + 4 and not runner.classifier.on_edgetpu
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "Edge TPU" in r.getMessage()]
    assert len(messages) == 2, messages  # the fallback, and "trying again": nothing per attempt
    assert "invalid ELF header" in messages[0] and "every 0.2 s" in messages[1]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "still unavailable" in r.getMessage()]
    assert any("not the Edge TPU runtime" in m for m in debug)


def test_auto_switches_to_the_edge_tpu_between_frames_once_it_loads_and_says_so_once(
        tpu_bundle, coral_video, fake_libedgetpu, monkeypatch, caplog):
    """The Edge TPU is faked here (none exists): once 'plugged in', its delegate runs the CPU twin."""
    runner, seen = _runner(tpu_bundle, coral_video, retry=0.3)
    with caplog.at_level(logging.INFO, logger="edgeclass"):
        runner.limits = type(runner.limits)(duration=0.8)
        runner.run()  # CPU only: the library does not load yet
        assert seen.backends and not any(seen.backends)
        # "Plug in the Coral": the runtime loads, and its delegate attaches.
        monkeypatch.setattr(interpreter_mod, "edgetpu_runtime_error", lambda: None)
        monkeypatch.setattr("edgeclass.device.pipeline.edgetpu_retry.edgetpu_runtime_error", lambda: None)
        monkeypatch.setattr(classifier_mod, "edgetpu_runtime_error", lambda: None)
        real_make = classifier_mod.make_interpreter
        cpu_model = load_bundle(tpu_bundle).model_path

        def fake_tpu(model_path, num_threads=None, edgetpu=False, backend=None):
            return real_make(cpu_model if edgetpu else model_path, num_threads=num_threads, backend=backend)

        monkeypatch.setattr(classifier_mod, "make_interpreter", fake_tpu)
        before = len(seen.backends)
        runner.limits = type(runner.limits)(duration=2.0)
        runner.run()
    after = seen.backends[before:]
    switch = after.index(True)
    assert not any(after[:switch]) and all(after[switch:]) and len(after) - switch > 5  # one clean switch
    assert runner.classifier.on_edgetpu and runner.classifier.model_path.name == "model_edgetpu.tflite"
    assert runner.edgetpu_retry is None  # done trying
    switched = [r.getMessage() for r in caplog.records if "switched" in r.getMessage()]
    assert switched == ["Edge TPU available now: switched from model.tflite on the CPU (ai_edge_litert) to "
                        "model_edgetpu.tflite on the Edge TPU (ai_edge_litert)"]


def test_a_library_that_loads_but_is_not_the_runtime_is_a_clear_error_not_a_crash(tpu_bundle, fake_libedgetpu):
    _loadable_non_delegate(fake_libedgetpu)
    assert "not the Edge TPU runtime" in interpreter_mod.edgetpu_runtime_error()
    with pytest.raises(ModelError, match=r"--edgetpu on, but .*libedgetpu\.so\.1 loads but is not the Edge TPU runtime"):
        open_classifier(load_bundle(tpu_bundle), edgetpu=EdgeTPU.ON)


def test_on_and_off_never_retry(tpu_bundle, fake_libedgetpu):
    b = load_bundle(tpu_bundle)
    from edgeclass.device.pipeline.edgetpu_retry import EdgeTPURetry

    assert EdgeTPURetry.for_classifier(b, open_classifier(b, edgetpu=EdgeTPU.OFF)) is None


def test_the_runtime_error_says_which_build_this_interpreter_needs(tpu_bundle, coral, tmp_path):
    """A real shared library that is not the runtime, found as libedgetpu.so.1 by the dynamic loader (a fresh process).

    libedgetpu is a TFLite delegate built against one TensorFlow version; the
    one-line error must say that, and which interpreter this is.
    """
    import os

    (tmp_path / "lib").mkdir()
    _loadable_non_delegate(tmp_path / "lib" / "libedgetpu.so.1")
    proc = run_edgeclass("predict", "-b", tpu_bundle, "--edgetpu", "on", coral / "images" / "cat.bmp",
                         env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path / "lib")})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "libedgetpu.so.1 loads but is not the Edge TPU runtime (no tflite_plugin_create_delegate)" in proc.stderr
    assert "libedgetpu must be built against the TensorFlow Lite of this interpreter (ai_edge_litert" in proc.stderr
    assert "built against TensorFlow 2.5" in proc.stderr and "google-coral/edgetpu/issues/812" in proc.stderr

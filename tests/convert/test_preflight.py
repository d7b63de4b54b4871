"""Edge TPU pre-flight, checked against models no one here wrote (Coral's) and a hard-swish model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeclass.convert.edgetpu_ops import check_edgetpu
from edgeclass.convert.tflite_graph import read_graph
from edgeclass.device.errors import ModelError

from ..conftest import run_edgeclass

CORAL_CPU_MODELS = (
    "mobilenet_v1_0.25_128_quant.tflite",
    "mobilenet_v1_0.5_160_quant.tflite",
    "mobilenet_v2_1.0_224_quant.tflite",
    "tf2_mobilenet_v2_1.0_224_ptq.tflite",
)


@pytest.mark.parametrize("name", CORAL_CPU_MODELS)
def test_coral_reference_models_are_fully_mapped(shared_data, name):
    result = check_edgetpu(shared_data / "coral" / name)
    assert result.total > 25
    assert result.fully_mapped, result.summary()
    assert result.first_cpu_op is None
    assert "fully mapped" in result.summary()


def test_coral_compiled_models_are_recognised(shared_data):
    for path in sorted((shared_data / "coral").glob("*_edgetpu.tflite")):
        result = check_edgetpu(path)
        assert result.already_compiled, path
        assert "already compiled" in result.summary()


def test_graph_reader_sees_operators_tensors_and_options(shared_data):
    graph = read_graph(shared_data / "coral" / "tf2_mobilenet_v2_1.0_224_ptq.tflite")
    names = [op.name for op in graph.ops]
    assert names[0] == "QUANTIZE" and names[-2:] == ["SOFTMAX", "QUANTIZE"]
    inp = graph.tensor(graph.inputs[0])
    assert inp.dtype == "uint8" and inp.shape == (1, 224, 224, 3) and inp.quantized and not inp.constant
    conv = graph.ops[1]
    assert conv.name == "CONV_2D" and conv.option("strideW") == 2
    assert graph.tensor(conv.inputs[1]).constant  # the weights


def test_check_command_on_an_existing_tflite_needs_no_tensorflow(shared_data):
    model = shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    probe = (
        "import sys, json\n"
        "from edgeclass.device.cli import app\n"
        f"try:\n    app(['convert', {str(model)!r}, '--edgetpu-check'], standalone_mode=False)\n"
        "except SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'matplotlib'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.strip().splitlines()
    assert "66 of 66 ops will run on the Edge TPU (fully mapped)" in out.stdout
    assert any(line.startswith("CONV_2D") and "Mapped to Edge TPU" in line for line in lines)
    assert json.loads(lines[-1]) == []


def test_check_command_refuses_conversion_options_on_a_tflite(shared_data, tmp_path):
    model = shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    proc = run_edgeclass("convert", model, "-o", tmp_path / "b")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "--edgetpu-check" in proc.stderr
    assert not (tmp_path / "b").exists()


def test_not_a_tflite_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        check_edgetpu(bogus)


@pytest.mark.slow
def test_mobilenet_v3_is_flagged_at_its_first_hard_swish(tmp_path):
    """Keras MobileNetV3Small (minimalistic=False), really converted to int8 by our quantizer."""
    import keras

    from edgeclass.convert.quantize import convert_int8, export_saved_model

    model = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), weights=None, minimalistic=False, classes=3)
    saved = export_saved_model(model, tmp_path / "saved")
    calibration = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    path = tmp_path / "v3.tflite"
    path.write_bytes(convert_int8(saved, calibration))

    result = check_edgetpu(path)
    names = [v.name for v in result.ops]
    first_hs = names.index("HARD_SWISH")
    first = result.first_cpu_op
    assert first is not None and first.index == first_hs and first.name == "HARD_SWISH"
    assert "hard-swish" in first.reason and "minimalistic" in first.reason
    assert all(v.on_tpu for v in result.ops[:first_hs])  # the stem before it maps
    assert not any(v.on_tpu for v in result.ops[first_hs:])  # the compiler cuts once
    assert f"falls back to the CPU at op #{first_hs} HARD_SWISH" in result.summary()


def _with_op_version(source, dest, op_name: str, version: int):
    """Coral's real model with one operator code's version changed (as a newer converter would write it)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    content = source.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    builtin = getattr(schema.BuiltinOperator, op_name)
    codes = [c for c in model.operatorCodes if max(c.builtinCode, c.deprecatedBuiltinCode) == builtin]
    assert codes, f"{source.name} has no {op_name}"
    for code in codes:
        code.version = version
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dest.write_bytes(bytes(builder.Output()))
    return dest


def test_every_operator_version_of_coral_models_and_the_default_graph_is_read(shared_data):
    """The versions the pre-flight judges are the file's: Coral's uint8 TF1 model is all v1, its TF2 int8 model is not."""
    tf1 = read_graph(shared_data / "coral" / "mobilenet_v2_1.0_224_quant.tflite")
    assert {op.version for op in tf1.ops} == {1}
    tf2 = check_edgetpu(shared_data / "coral" / "tf2_mobilenet_v2_1.0_224_ptq.tflite")
    assert tf2.to_json()["op_versions"] == {"ADD": 2, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "MEAN": 2, "QUANTIZE": 1,
                                            "RESHAPE": 1, "SOFTMAX": 2}
    assert tf2.fully_mapped and tf2.unverified == [] and tf2.refused is None


def test_a_version_no_compiled_model_shows_is_unverified_never_will_run(shared_data, tmp_path):
    model = _with_op_version(shared_data / "coral" / "tf2_mobilenet_v2_1.0_224_ptq.tflite", tmp_path / "m.tflite", "MEAN", 3)
    result = check_edgetpu(model)
    (mean,) = [v for v in result.ops if v.name == "MEAN"]
    assert not mean.on_tpu and mean.version == 3 and mean.unverified == "unverified: compiler 16 may reject MEAN v3"
    assert not result.fully_mapped and result.on_tpu == result.total - 1
    assert result.first_cpu_op is None  # not a CPU fallback: the ops after it still map if the compiler takes it
    summary = result.summary()
    assert summary == (f"m.tflite: {result.total - 1} of {result.total} ops will run on the Edge TPU, 1 more only if the "
                       "compiler accepts their version (unverified: compiler 16 may reject MEAN v3)")
    assert "fully mapped" not in summary
    assert ("MEAN v3", 1, "unverified: compiler 16 may reject MEAN v3") in result.table()
    manifest = result.to_json()
    assert manifest["ops_unverified"] == 1 and manifest["unverified_versions"] == ["MEAN v3"] and manifest["fully_mapped"] is False


def test_a_version_compiler_16_refuses_means_nothing_runs_on_the_tpu(shared_data, tmp_path):
    """google-coral/edgetpu#631: compiler 16.0 cannot parse CONV_2D v6, so the whole model fails to compile."""
    model = _with_op_version(shared_data / "coral" / "tf2_mobilenet_v2_1.0_224_ptq.tflite", tmp_path / "m.tflite", "CONV_2D", 6)
    result = check_edgetpu(model)
    assert result.on_tpu == 0 and not result.fully_mapped
    assert result.refused.startswith("compiler 16 refuses CONV_2D v6 and the model does not compile")
    assert "google-coral/edgetpu#631" in result.refused
    assert result.summary() == f"m.tflite: 0 of {result.total} ops will run on the Edge TPU: {result.refused}"
    assert all(v.reason == result.refused for v in result.ops if v.name == "CONV_2D")


def test_check_command_prints_each_operator_with_its_version(shared_data, tmp_path):
    model = _with_op_version(shared_data / "coral" / "tf2_mobilenet_v2_1.0_224_ptq.tflite", tmp_path / "m.tflite", "SOFTMAX", 3)
    proc = run_edgeclass("convert", model, "--edgetpu-check")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "(unverified: compiler 16 may reject SOFTMAX v3)" in lines[0]
    assert any(line.startswith("CONV_2D v3") and line.endswith("Mapped to Edge TPU") for line in lines)
    assert any(line.startswith("SOFTMAX v3") and line.endswith("unverified: compiler 16 may reject SOFTMAX v3") for line in lines)

"""Edge TPU compilation: the compiler's log parsed, and the --edgetpu path driven end to end.

The real edgetpu_compiler is not installable on this machine (it is an x86-64
Debian/Ubuntu package from Coral's apt repository), so the end-to-end tests run
a stand-in executable written by the test (conftest.write_stand_in_compiler)
that takes the real arguments, prints a log in the real compiler's format and
writes <stem>_edgetpu.tflite. The Edge TPU runtime is absent too, so the device
loader falls back to the CPU model, as it would on a Pi without a Coral.
"""

from __future__ import annotations

import json
import os

import pytest

from edgeclass.convert.edgetpu_compile import EdgeTPUCompilerError, find_compiler, parse_compiler_log
from edgeclass.device.bundle import load_bundle
from edgeclass.device.pipeline.classifier import open_classifier

from ..conftest import run_edgeclass
from .conftest import write_stand_in_compiler

# Verbatim shape of a real compiler run where one op stays on the CPU (public issue reports).
PARTIAL_LOG = """\
Edge TPU Compiler version 15.0.340273435

Model compiled successfully in 1379 ms.

Input model: model.tflite
Input size: 4.41MiB
Output model: model_edgetpu.tflite
Output size: 5.49MiB
On-chip memory used for caching model parameters: 1.92MiB
On-chip memory remaining for caching model parameters: 1.75KiB
Off-chip memory used for streaming uncached model parameters: 3.23MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 136
Operation log: model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 135
Number of operations that will run on CPU: 1
"""

TABLE = """
Operator                       Count      Status

RESHAPE                        15         Mapped to Edge TPU
CONCATENATION                  3          Mapped to Edge TPU
HARD_SWISH                     1          Operation not supported
CONV_2D                        117        Mapped to Edge TPU
"""


def test_parse_partial_log_without_table():
    report = parse_compiler_log(PARTIAL_LOG)
    assert report.version == "15.0.340273435"
    assert (report.ops_mapped, report.ops_total, report.subgraphs) == (135, 136, 1)
    assert report.on_chip_bytes == round(1.92 * 2**20)
    assert report.on_chip_remaining_bytes == round(1.75 * 1024)
    assert report.off_chip_bytes == round(3.23 * 2**20)
    assert not report.fully_mapped


def test_parse_table_counts_mapped_ops():
    report = parse_compiler_log(PARTIAL_LOG + TABLE)
    assert report.ops_mapped == 135 and report.ops_total == 136
    assert ("HARD_SWISH", 1, "Operation not supported") in report.operators
    assert report.to_json()["operators"][0] == {"op": "RESHAPE", "count": 15, "status": "Mapped to Edge TPU"}


def test_parse_fully_mapped_log_has_no_cpu_lines():
    text = PARTIAL_LOG.split("Model successfully compiled but")[0].replace("Total number of operations: 136",
                                                                            "Total number of operations: 66")
    report = parse_compiler_log(text)
    assert report.fully_mapped and report.ops_mapped == 66
    assert "66 of 66 ops mapped" in report.summary()


def test_missing_compiler_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EdgeTPUCompilerError, match="x86-64 Debian/Ubuntu.*edgetpu-compiler"):
        find_compiler()
    with pytest.raises(EdgeTPUCompilerError, match="no such Edge TPU compiler"):
        find_compiler(tmp_path / "nope")


@pytest.mark.slow
def test_edgetpu_with_stand_in_compiler(tiny_run, tmp_path):
    compiler = write_stand_in_compiler(tmp_path / "bin")
    out = tmp_path / "bundle"
    proc = run_edgeclass("convert", tiny_run, "-o", out, "--calibration-size", "9", "--edgetpu",
                         "--edgetpu-compiler", compiler, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "7 of 7 ops mapped" in proc.stdout
    bundle = load_bundle(out)
    assert bundle.edgetpu_model_path is not None and bundle.edgetpu_model_path.name == "model_edgetpu.tflite"
    edgetpu = bundle.manifest["edgetpu"]
    assert edgetpu["compiled"] is True
    assert edgetpu["compiler"]["ops_mapped"] == 7 and edgetpu["compiler"]["ops_total"] == 7
    assert edgetpu["compiler"]["on_chip_memory_bytes"] == round(3.25 * 1024)
    assert edgetpu["compiler"]["off_chip_memory_bytes"] == 0
    assert edgetpu["preflight"]["fully_mapped"] is True
    # The compiled file was made from the exact model.tflite in the bundle.
    assert bundle.edgetpu_model_path.read_bytes().startswith(bundle.model_path.read_bytes())
    assert (out / "report" / "edgetpu_compiler.log").read_text().startswith("Edge TPU Compiler version")
    # No Edge TPU runtime here: the device loader runs the CPU model instead.
    assert open_classifier(bundle, num_threads=1).model_path.name == "model.tflite"


@pytest.mark.slow
def test_compiler_missing_or_failing_leaves_the_cpu_bundle(tiny_run, tmp_path):
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    env_path = os.environ["PATH"]
    os.environ["PATH"] = str(tmp_path / "empty")  # no edgetpu_compiler anywhere
    try:
        with pytest.raises(EdgeTPUCompilerError) as info:
            convert_training_dir(tiny_run, tmp_path / "b1", ConvertOptions(calibration_size=9, edgetpu=True))
    finally:
        os.environ["PATH"] = env_path
    message = str(info.value)
    assert "edgetpu_compiler not found" in message and "apt-get install edgetpu-compiler" in message
    assert "CPU bundle" in message and "complete and usable" in message
    bundle = load_bundle(tmp_path / "b1")
    assert bundle.edgetpu_model_path is None and bundle.manifest["edgetpu"]["compiled"] is False

    failing = write_stand_in_compiler(tmp_path / "bin", mode="fail")
    with pytest.raises(EdgeTPUCompilerError, match=r"failed on .*exit 1.*Internal compiler error"):
        convert_training_dir(tiny_run, tmp_path / "b2",
                             ConvertOptions(calibration_size=9, edgetpu=True, edgetpu_compiler=failing))
    assert load_bundle(tmp_path / "b2").edgetpu_model_path is None


@pytest.mark.slow
def test_partially_mapped_compile_is_recorded(tiny_run, tmp_path):
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    compiler = write_stand_in_compiler(tmp_path / "bin", mode="partial")
    result = convert_training_dir(tiny_run, tmp_path / "b",
                                  ConvertOptions(calibration_size=9, edgetpu=True, edgetpu_compiler=compiler))
    assert (result.compile_report.ops_mapped, result.compile_report.ops_total) == (5, 7)
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert manifest["edgetpu"]["compiler"]["ops_mapped"] == 5
    assert "model_edgetpu.tflite" in manifest["files"]

"""Fixtures for the converter: a real tiny training directory and its converted bundle."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from .rundir_factory import make_training_dir, split_entries, write_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> tuple[Path, dict]:
    """38 generated JPEGs per class (3 classes), split 24 train / 4 val / 10 test per class."""
    data = tmp_path_factory.mktemp("tiny_data")
    return data, split_entries(write_dataset(data, 38))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_dataset) -> Path:
    """A training directory holding a really trained tiny CNN (32x32 input, normalisation inside)."""
    data, split = tiny_dataset
    return make_training_dir(tmp_path_factory.mktemp("tiny_run") / "run", data, split)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_run):
    """The default conversion of ``tiny_run``: (bundle path, ConvertResult)."""
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    out = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
    result = convert_training_dir(tiny_run, out, ConvertOptions(calibration_size=30))
    return out, result


def copy_run(src: Path, dst: Path) -> Path:
    """A writable copy of a training directory (tests that break one must not break the shared fixture)."""
    import shutil

    shutil.copytree(src, dst)
    return dst


# The real edgetpu_compiler cannot be installed here (x86-64 Debian/Ubuntu
# package from Coral's apt repository, not on PyPI). This stand-in takes the
# same arguments (-s, -o OUT_DIR, MODEL), prints a log in the real compiler's
# format and writes OUT_DIR/<stem>_edgetpu.tflite holding the Edge TPU custom
# op name, which is all the converter relies on.
_STAND_IN = '''\
#!{python}
import sys, pathlib
args = sys.argv[1:]
out_dir = pathlib.Path(args[args.index("-o") + 1])
model = pathlib.Path(args[-1])
mode = {mode!r}
if mode == "fail":
    print("Edge TPU Compiler version 16.0.384591198")
    print("ERROR: Attempting to use a delegate that only supports static-sized tensors with a graph that has dynamic-sized tensors.")
    print("Internal compiler error. Aborting!")
    sys.exit(1)
data = model.read_bytes()
(out_dir / (model.stem + "_edgetpu.tflite")).write_bytes(data + b"edgetpu-custom-op")
(out_dir / (model.stem + "_edgetpu.log")).write_text("stand-in log\\n")
partial = mode == "partial"
print("Edge TPU Compiler version 16.0.384591198")
print("Started a compilation timeout timer of 180 seconds.")
print()
print("Model compiled successfully in 412 ms.")
print()
print("Input model: " + str(model))
print("Input size: 5.52KiB")
print("Output model: " + str(out_dir / (model.stem + "_edgetpu.tflite")))
print("Output size: 38.13KiB")
print("On-chip memory used for caching model parameters: 3.25KiB")
print("On-chip memory remaining for caching model parameters: 7.98MiB")
print("Off-chip memory used for streaming uncached model parameters: 0.00B")
print("Number of Edge TPU subgraphs: 1")
print("Total number of operations: 7")
print("Operation log: " + str(out_dir / (model.stem + "_edgetpu.log")))
print()
if partial:
    print("Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower.")
    print("Number of operations that will run on Edge TPU: 5")
    print("Number of operations that will run on CPU: 2")
    print()
print("Operator                       Count      Status")
print()
print("QUANTIZE                       1          Mapped to Edge TPU")
print("MUL                            1          Mapped to Edge TPU")
print("CONV_2D                        2          Mapped to Edge TPU")
print("MEAN                           1          Mapped to Edge TPU")
if partial:
    print("FULLY_CONNECTED                1          More than one subgraph is not supported")
    print("SOFTMAX                        1          More than one subgraph is not supported")
else:
    print("FULLY_CONNECTED                1          Mapped to Edge TPU")
    print("SOFTMAX                        1          Mapped to Edge TPU")
print("Compilation child process completed within timeout period.")
print("Compilation succeeded!")
'''


def write_stand_in_compiler(directory: Path, mode: str = "ok") -> Path:
    """Write an executable ``edgetpu_compiler`` stand-in (see the note above); mode: ok, partial, fail."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "edgetpu_compiler"
    path.write_text(textwrap.dedent(_STAND_IN.format(python=sys.executable, mode=mode)), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path

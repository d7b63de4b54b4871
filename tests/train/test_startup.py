"""A mistake on the command line fails before TensorFlow loads; TensorFlow's chatter only with -v.

Each case runs ``edgeclass`` in a fresh process that reports, after the command ended, whether
TensorFlow was ever imported: a property, not a timing. The wall time is printed for the record.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import pytest

from .conftest import make_tree, probe

def _probe(*args) -> tuple[dict, str, float, float]:
    """(the probe's report, stderr, wall seconds, CPU seconds) of one command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    report, stderr = probe(*args, timeout=120)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return report, stderr, seconds, cpu


@pytest.fixture
def cases(tmp_path):
    data = make_tree(tmp_path / "data", {"a": 4, "b": 4})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something.txt").write_text("not ours")
    (tmp_path / "a-file").write_text("")
    return {
        "train: no such dataset": (["train", tmp_path / "dtaa", "-o", tmp_path / "run"], "no such folder"),
        "train: dataset is a file": (["train", tmp_path / "a-file", "-o", tmp_path / "run"], "no such folder"),
        "train: output not empty": (["train", data, "-o", tmp_path / "busy"], "not empty"),
        "train: output inside the dataset": (["train", data, "-o", data / "run"], "inside the dataset"),
        "train: bad --split": (["train", data, "-o", tmp_path / "run", "--split", "0.8,0.2"], "expected three fractions"),
        "train: bad --alpha": (["train", data, "-o", tmp_path / "run", "--alpha", "0.6"], "--alpha 0.6"),
        "train: weights file missing": (["train", data, "-o", tmp_path / "run", "--weights", tmp_path / "w.h5"], "no such file"),
        "train: nothing to resume": (["train", data, "-o", tmp_path / "run", "--resume"], "nothing to resume"),
        "train: --since not a run": (["train", data, "-o", tmp_path / "run", "--since", tmp_path], "no split.json there"),
        "train: unknown option": (["train", data, "-o", tmp_path / "run", "--epoch", "3"], "No such option"),
        "convert: no such training dir": (["convert", tmp_path / "rnu", "-o", tmp_path / "b"], "no such training directory"),
        "convert: incomplete training dir": (["convert", tmp_path / "busy", "-o", tmp_path / "b"], "incomplete training directory"),
        "convert: bad --io": (["convert", tmp_path / "busy", "-o", tmp_path / "b", "--io", "int4"], "Invalid value"),
    }


def test_mistakes_fail_before_tensorflow_is_imported(cases):
    for name, (args, message) in cases.items():
        result, stderr, seconds, cpu = _probe(*args)
        print(f"{name:36s} exit {result['code']}  wall {seconds:.2f} s, CPU {cpu:.2f} s  "
              f"tensorflow imported: {result['tensorflow']}")
        assert result["code"] == 2, (name, stderr)
        assert message in stderr, (name, stderr)
        assert "Traceback" not in stderr, name
        assert not result["tensorflow"] and not result["keras"], f"{name}: TensorFlow was imported before the check"


def test_tensorflow_startup_chatter_only_with_verbose(tmp_path):
    """The same import TensorFlow does in a command, with and without -v (a real TensorFlow import)."""
    pytest.importorskip("tensorflow")
    code = ("import logging, sys\n"
            "from edgeclass.device.cli import setup_logging\n"
            "setup_logging(logging.DEBUG if sys.argv[1] == '-v' else logging.INFO)\n"
            "from edgeclass.train.cli import _require_tensorflow\n"
            "_require_tensorflow()\n"
            "import tensorflow as tf\n"
            "tf.constant(1.0) + 1.0\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code, "-"], capture_output=True, text=True, timeout=300, env=env)
    loud = subprocess.run([sys.executable, "-c", code, "-v"], capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0 and loud.returncode == 0, (quiet.stderr, loud.stderr)
    print(f"stderr without -v: {quiet.stderr!r}\nwith -v: {len(loud.stderr.splitlines())} lines")
    assert quiet.stderr == ""
    assert "cpu_feature_guard" in loud.stderr or "oneDNN" in loud.stderr

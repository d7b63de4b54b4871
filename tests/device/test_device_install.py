"""A device-only install (``pip install 'edgeclass[device]'``) runs without TensorFlow.

This builds a fresh virtual environment from this checkout with only the
``device`` extra, as on a Raspberry Pi, proves TensorFlow is absent there, and
runs real device commands in it. It needs the package registry (or pip's
cache), like any install; it is skipped with the reason when pip cannot install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("device-venv")
    venv.EnvBuilder(with_pip=True).create(root)
    python = root / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{REPO}[device]"],
        capture_output=True, text=True, timeout=900, env=env, stdin=subprocess.DEVNULL,
    )
    if install.returncode != 0:
        tail = (install.stderr or install.stdout).strip().splitlines()[-3:]
        if any("No matching distribution" in line or "Could not fetch" in line or "connection" in line.lower() for line in tail):
            pytest.skip("pip could not reach the package registry: " + " | ".join(tail))
        pytest.fail("device-only install failed:\n" + "\n".join(tail))
    return root


def test_tensorflow_is_not_installed_by_the_device_extra(device_venv):
    python = device_venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import importlib.util as u, json; print(json.dumps("
                            "{m: u.find_spec(m) is not None for m in ('tensorflow', 'keras', 'ai_edge_litert', 'cv2')}))"],
                           capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(probe.stdout)
    assert found == {"tensorflow": False, "keras": False, "ai_edge_litert": True, "cv2": True}


def test_device_commands_work_there(device_venv, colour_bundle, colour_video, tmp_path):
    edgeclass = device_venv / "bin" / "edgeclass"
    run = subprocess.run([str(edgeclass), "run", "-b", str(colour_bundle), "-s", str(colour_video), "-f", "jsonl"],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["label"] for line in run.stdout.splitlines()][::10] == ["red", "green", "blue"]
    info = subprocess.run([str(edgeclass), "bundle", "info", str(colour_bundle), "--verify"],
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "test inference ok" in info.stdout
    # Workstation commands are listed but say clearly what is missing.
    train = subprocess.run([str(edgeclass), "train", str(tmp_path), "-o", str(tmp_path / "out")],
                           capture_output=True, text=True, timeout=120)
    assert train.returncode == 2
    assert train.stderr.strip().splitlines()[-1] == "error: TensorFlow is not installed: pip install 'edgeclass[train]'"

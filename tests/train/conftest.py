"""Fixtures for the trainer's tests: small generated photo folders, and the shared weights when present."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ..conftest import SHARED

WEIGHTS_035 = SHARED / "data" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
CLASSES = ("circles", "squares", "stripes")


def shape_image(kind: str, rng: np.random.Generator, size: tuple[int, int] | None = None) -> np.ndarray:
    """A BGR photo-like image (noisy background, one dark shape) that a MobileNet learns in a few steps."""
    import cv2

    h, w = size or tuple(int(v) for v in rng.integers(70, 150, 2))
    img = np.clip(rng.integers(110, 200) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    colour = tuple(int(v) for v in rng.integers(0, 70, 3))
    if kind == "circles":
        cv2.circle(img, (w // 2, h // 2), min(h, w) // 3, colour, -1)
    elif kind == "squares":
        cv2.rectangle(img, (w // 4, h // 4), (3 * w // 4, 3 * h // 4), colour, -1)
    else:
        for y in range(0, h, 12):
            cv2.line(img, (0, y), (w, y), colour, 4)
    return img


def distinct_image(rng: np.random.Generator, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A BGR image of random smooth blobs: unlike ``shape_image``'s, no two are near-duplicates
    (their perceptual hashes differ in about half their bits)."""
    import cv2

    coarse = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    img = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def make_tree(root: Path, counts: dict[str, int], seed: int = 0, distinct: bool = False) -> Path:
    """``root/<class>/<i>.jpg`` with ``counts[class]`` generated images each (``distinct``: see :func:`distinct_image`)."""
    import cv2

    rng = np.random.default_rng(seed)
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = distinct_image(rng) if distinct else shape_image(label, rng)
            cv2.imwrite(str(root / label / f"{label}_{i:03d}.jpg"), image)
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    """3 classes x 10 small JPEGs, fresh per test."""
    return make_tree(tmp_path / "data", {c: 10 for c in CLASSES})


def weights_args() -> list[str]:
    """Backbone weights for training tests: the shared ImageNet file when present, else random.

    With random weights the tests still check the whole pipeline; accuracy
    assertions are only made with the pretrained backbone.
    """
    return ["--weights", str(WEIGHTS_035) if WEIGHTS_035.exists() else "none"]


def pretrained() -> bool:
    return WEIGHTS_035.exists()


def tiny_train_args(epochs: int = 2, head_epochs: int = 8) -> list[str]:
    """The smallest honest training: MobileNetV2 alpha 0.35 at 64x64 (about 1 s per epoch here)."""
    return ["--alpha", "0.35", "--input-size", "64", *weights_args(), "--epochs", str(epochs),
            "--head-epochs", str(head_epochs), "--batch-size", "16", "--workers", "2"]


def invoke(*args) -> "object":
    """Run an edgeclass command in this process (TensorFlow stays loaded between tests)."""
    from typer.testing import CliRunner

    from edgeclass.device.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, Path, object]:
    """One complete tiny training run: (data dir, training dir, CLI result)."""
    root = tmp_path_factory.mktemp("train")
    data = make_tree(root / "data", {c: 16 for c in CLASSES})
    out = root / "run"
    result = invoke("train", data, "-o", out, *tiny_train_args(epochs=3))
    assert result.exit_code == 0, (result.output, result.exception)
    return data, out, result


@pytest.fixture(autouse=True)
def _quiet_tensorflow(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))


# ``edgeclass ARGS`` in a fresh process that reports, once the command ended, its exit code and whether
# TensorFlow or Keras was ever imported: a property, not a timing.
PROBE = (
    "import sys, json\n"
    "from edgeclass.device.cli import main\n"
    "sys.argv = ['edgeclass'] + sys.argv[1:]\n"
    "try:\n"
    "    main()\n"
    "    code = 0\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print(json.dumps({'code': code, 'tensorflow': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules}))\n"
)


def probe(*args, timeout: float = 180) -> tuple[dict, str]:
    """Run ``edgeclass ARGS`` under :data:`PROBE`: (its report ``{code, tensorflow, keras}``, its stderr)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def read_history(run: Path) -> list[dict]:
    """A training directory's per-epoch log, ``logs/history.csv``, one dict per row."""
    with open(run / "logs" / "history.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))

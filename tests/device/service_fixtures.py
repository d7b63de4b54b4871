"""Real bundles for the release and deploy tests: the tiny colour classifier (tests/device/tinymodel.py).

Made without TensorFlow and without any downloaded model, so these tests
always run; the interpreter really loads and runs each one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeclass.device.pipeline.wrap import create_bundle_from_model

from .tinymodel import write_colour_classifier


def make_bundle(out: Path, name: str, work: Path) -> Path:
    """``edgeclass bundle create -m colour.tflite -l colour_labels.txt -o out --name name``."""
    model, labels = write_colour_classifier(work)
    return create_bundle_from_model(model, labels, out, name=name)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Two valid bundles with different names ("v1", "v2") and one whose model no longer matches its hash."""
    work = tmp_path_factory.mktemp("service-bundles")
    made = {name: make_bundle(work / name, f"colour-{name}", work / "model") for name in ("v1", "v2")}
    damaged = make_bundle(work / "damaged", "colour-damaged", work / "model")
    model = damaged / "model.tflite"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    made["damaged"] = damaged
    return made

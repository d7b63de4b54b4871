"""Real bundles for the service tests: Coral's small MobileNet v1 0.25 (128x128, 0.5 MB)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORAL = Path(os.environ.get("EDGECLASS_SHARED", REPO.parent / "shared")) / "data" / "coral"
MODEL = CORAL / "mobilenet_v1_0.25_128_quant.tflite"
LABELS = CORAL / "imagenet_labels.txt"


def make_bundle(out: Path, name: str) -> Path:
    """``edgeclass bundle create -m mobilenet_v1_0.25_128_quant.tflite -l imagenet_labels.txt -o out --name name``."""
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} not present: the Coral models are only on the development machines")
    from edgeclass.device.pipeline.wrap import create_bundle_from_model

    return create_bundle_from_model(MODEL, LABELS, out, name=name)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Two valid bundles with different names ("v1", "v2") and one whose model no longer matches its hash."""
    work = tmp_path_factory.mktemp("service-bundles")
    made = {name: make_bundle(work / name, f"mobilenet-{name}") for name in ("v1", "v2")}
    damaged = make_bundle(work / "damaged", "mobilenet-damaged")
    model = damaged / "model.tflite"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    made["damaged"] = damaged
    return made

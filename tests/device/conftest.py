"""Device-side fixtures: real bundles made without TensorFlow, real videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeclass.device.pipeline.wrap import create_bundle_from_model

from .tinymodel import COLOURS, write_colour_classifier


@pytest.fixture(scope="session")
def colour_bundle(tmp_path_factory) -> Path:
    """A bundle around the tiny red/green/blue classifier (32x32 uint8 input)."""
    work = tmp_path_factory.mktemp("colour")
    model, labels = write_colour_classifier(work)
    return create_bundle_from_model(model, labels, work / "bundle")


@pytest.fixture(scope="session")
def coral_bundle(shared_data, tmp_path_factory) -> Path:
    """A bundle around Coral's uint8 MobileNetV2 (ImageNet, 1001 labels)."""
    coral = shared_data / "coral"
    out = tmp_path_factory.mktemp("coral") / "mobilenet_v2"
    return create_bundle_from_model(coral / "mobilenet_v2_1.0_224_quant.tflite", coral / "imagenet_labels.txt", out)


def colour_frame(name: str | tuple[int, int, int], height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """An RGB frame of one class colour (or of any RGB triple) with texture noise (never uniform, so never 'blank')."""
    rng = np.random.default_rng(seed)
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = COLOURS[name] if isinstance(name, str) else name
    noise = rng.integers(-30, 30, frame.shape)
    return np.clip(frame.astype(int) + noise, 0, 255).astype(np.uint8)


def write_video(path: Path, frames, fps: float = 30.0, rgb: bool = True) -> Path:
    """Write frames (RGB, or OpenCV's BGR with ``rgb=False``) as an MJPEG .avi."""
    import cv2

    frames = list(frames)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "OpenCV could not open an MJPEG writer"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if rgb else frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def colour_video(tmp_path_factory) -> Path:
    """10 red, then 10 green, then 10 blue frames."""
    frames = [colour_frame(name, seed=i) for name in ("red", "green", "blue") for i in range(10)]
    return write_video(tmp_path_factory.mktemp("video") / "rgb.avi", frames)

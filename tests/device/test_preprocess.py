"""Preprocessing is exact: the lookup-table path equals the float formula."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclass.device.bundle import InputSpec, ResizePolicy
from edgeclass.device.pipeline.preprocess import Preprocessor, crop_box, resize_image


def _reference(rgb, spec: InputSpec) -> np.ndarray:
    """The manifest's maths written out in float, pixel by pixel."""
    small = resize_image(rgb, spec.height, spec.width, spec.resize).astype(np.float64)
    real = (small - np.array(spec.mean)) / np.array(spec.std)
    if spec.color == "BGR":
        real = real[:, :, ::-1]
    if spec.dtype == "float32":
        return real[None].astype(np.float32)
    lo, hi = (0, 255) if spec.dtype == "uint8" else (-128, 127)
    scaled = real / spec.scale
    q = np.clip(np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + spec.zero_point, lo, hi)  # std::round, as TFLite
    return q[None].astype(spec.dtype)


@pytest.mark.parametrize("spec", [
    InputSpec(224, 224, "uint8", 0.0078125, 128, mean=(127.5,) * 3, std=(127.5,) * 3, normalization="device"),
    InputSpec(224, 224, "uint8", 1.0, 0),
    InputSpec(160, 120, "int8", 1.0, -128),
    InputSpec(96, 96, "int8", 0.0157, 3, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4), normalization="device"),
    InputSpec(96, 96, "uint8", 0.02, 120, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4), color="BGR", normalization="device"),
    InputSpec(64, 64, "float32", mean=(127.5,) * 3, std=(127.5,) * 3, resize=ResizePolicy.STRETCH, normalization="device"),
])
def test_lut_path_equals_float_formula(spec):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    got = Preprocessor(spec)(frame)
    want = _reference(frame, spec)
    assert got.shape == (1, spec.height, spec.width, 3)
    assert got.dtype == want.dtype
    if spec.dtype == "float32":
        np.testing.assert_allclose(got, want, atol=1e-5)
    else:
        np.testing.assert_array_equal(got, want)


def test_pixels_pass_through_untouched_for_a_pixel_domain_model():
    frame = np.arange(224 * 224 * 3, dtype=np.uint32).reshape(224, 224, 3).astype(np.uint8)
    out = Preprocessor(InputSpec(224, 224, "uint8", 1.0, 0))(frame)
    np.testing.assert_array_equal(out[0], frame)


def test_bgr_models_get_channels_swapped():
    frame = np.zeros((50, 50, 3), np.uint8)
    frame[..., 0] = 200  # red
    out = Preprocessor(InputSpec(10, 10, "uint8", 1.0, 0, color="BGR"))(frame)
    assert out[0, 5, 5].tolist() == [0, 0, 200]


def test_center_crop_keeps_the_middle_and_stretch_keeps_everything():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :80] = 255  # a white band at the far left, outside the central 480x480 square
    assert crop_box(480, 640, 224, 224) == (0, 80, 480, 480)
    assert crop_box(640, 480, 100, 200) == (200, 0, 240, 480)
    cropped = resize_image(frame, 224, 224, ResizePolicy.CENTER_CROP)
    stretched = resize_image(frame, 224, 224, ResizePolicy.STRETCH)
    assert cropped.max() == 0
    assert stretched[:, :20].min() == 255

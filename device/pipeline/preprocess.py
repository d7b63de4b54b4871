"""Turning a camera frame into the model's input tensor, as the manifest says.

This is the single definition of preprocessing: the device calls
:class:`Preprocessor` on every frame, and the trainer resizes its images with
:func:`resize_image` so the network is trained on exactly what the Pi feeds it.

Pixel maths: a pixel ``p`` (0..255, RGB) becomes the real value
``(p - mean) / std`` the network was trained on (``mean=0, std=1`` when the
model normalises inside itself), then the quantized value
``round(real / scale + zero_point)``. For uint8/int8 inputs that whole chain is
a function of a single byte, so it is precomputed into a 256-entry lookup table
per channel and applied with one ``cv2.LUT`` call: exact, and far cheaper than
float arithmetic on every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..bundle import InputSpec, ResizePolicy


def crop_box(frame_h: int, frame_w: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
    """The centred ``(top, left, height, width)`` region of a frame with the output's aspect."""
    target = out_w / out_h
    if frame_w / frame_h > target:  # frame is wider: cut the sides
        w = max(1, round(frame_h * target))
        return 0, (frame_w - w) // 2, frame_h, w
    h = max(1, round(frame_w / target))
    return (frame_h - h) // 2, 0, h, frame_w


def resize_image(rgb: np.ndarray, height: int, width: int, policy: ResizePolicy) -> np.ndarray:
    """Resize an HxWx3 uint8 image to ``height x width`` under ``policy``.

    Cropping first and resizing once is the same geometry as "shorter side to
    size, then centre crop", with a single interpolation and less work.
    """
    import cv2

    if policy is ResizePolicy.CENTER_CROP:
        top, left, h, w = crop_box(rgb.shape[0], rgb.shape[1], height, width)
        rgb = rgb[top : top + h, left : left + w]
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return np.ascontiguousarray(rgb)
    # INTER_AREA averages when shrinking (no aliasing on 640x480 -> 224);
    # INTER_LINEAR when enlarging, where AREA degenerates to nearest.
    shrinking = rgb.shape[0] > height or rgb.shape[1] > width
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interp)


@dataclass
class Preprocessor:
    """Callable: RGB uint8 frame (any size) -> input tensor of shape (1, H, W, 3)."""

    spec: InputSpec
    _lut: np.ndarray | None = field(init=False, default=None, repr=False)
    _identity: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        spec = self.spec
        if spec.dtype == "float32":
            return
        pixels = np.arange(256, dtype=np.float64)
        mean = np.asarray(spec.mean, dtype=np.float64)[:, None]
        std = np.asarray(spec.std, dtype=np.float64)[:, None]
        real = (pixels[None, :] - mean) / std
        # TFLite quantizes with std::round (half away from zero) before adding
        # the zero point; np.round would round half to even and differ by one.
        scaled = real / spec.scale
        q = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + spec.zero_point
        lo, hi = (0, 255) if spec.dtype == "uint8" else (-128, 127)
        q = np.clip(q, lo, hi).astype(np.int64)
        if spec.color == "BGR":
            q = q[::-1]
        identity = np.arange(256)[None, :] if spec.dtype == "uint8" else None
        self._identity = identity is not None and bool(np.all(q == identity))
        # cv2.LUT wants a (1, 256, C) table of the output's bit pattern.
        self._lut = np.ascontiguousarray((q & 0xFF).astype(np.uint8).T[None, :, :])

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.spec.height, self.spec.width, 3)

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """Only the geometric step (what the trainer caches)."""
        return resize_image(rgb, self.spec.height, self.spec.width, self.spec.resize)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        small = self.resize(rgb)
        spec = self.spec
        if spec.dtype == "float32":
            x = (small.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
            if spec.color == "BGR":
                x = x[:, :, ::-1]
            return np.ascontiguousarray(x[None])
        if spec.color == "BGR":
            small = small[:, :, ::-1]
        if self._identity:
            out = np.ascontiguousarray(small)
        else:
            out = cv2.LUT(np.ascontiguousarray(small), self._lut)
        if spec.dtype == "int8":
            out = out.view(np.int8)
        return out[None]

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
from enum import Enum

import numpy as np

from .errors import BundleError


class ResizePolicy(str, Enum):
    """How a frame of any aspect ratio becomes the model's square-ish input."""

    CENTER_CROP = "center_crop"  # shorter side to fit, crop the centre: no distortion
    STRETCH = "stretch"  # whole frame squeezed to the input size: nothing cut off


INPUT_DTYPES = ("uint8", "int8", "float32")


@dataclass(frozen=True)
class InputSpec:
    """Everything needed to turn an RGB frame into the model's input tensor."""

    height: int
    width: int
    dtype: str = "uint8"
    scale: float = 1.0  # quantization scale (ignored for float32)
    zero_point: int = 0
    resize: ResizePolicy = ResizePolicy.CENTER_CROP
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    color: str = "RGB"  # channel order the model expects
    normalization: str = "model"  # "model": mean/std are 0/1; "device": applied here

    def __post_init__(self) -> None:
        if self.dtype not in INPUT_DTYPES:
            raise BundleError(f"input dtype {self.dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
        if self.color not in ("RGB", "BGR"):
            raise BundleError(f"input colour order {self.color!r} is not RGB or BGR")
        if self.height < 1 or self.width < 1:
            raise BundleError(f"input size {self.height}x{self.width} is not positive")
        if self.dtype != "float32" and not self.scale > 0:
            raise BundleError(f"input quantization scale {self.scale} must be > 0 for {self.dtype}")
        if any(s == 0 for s in self.std):
            raise BundleError(f"input normalization std {list(self.std)} contains 0")

    def to_json(self) -> dict:
        """The manifest's ``input`` section."""
        return {
            "height": self.height,
            "width": self.width,
            "channels": 3,
            "color": self.color,
            "dtype": self.dtype,
            "quantization": {"scale": self.scale, "zero_point": self.zero_point},
            "resize": self.resize.value,
            "normalization": {"where": self.normalization, "mean": list(self.mean), "std": list(self.std)},
        }

    @classmethod
    def from_json(cls, data: dict, where: str = "bundle.json") -> "InputSpec":
        """Read the manifest's ``input`` section; errors name ``where``."""
        try:
            quant = data.get("quantization") or {}
            norm = data.get("normalization") or {}
            resize = data.get("resize", ResizePolicy.CENTER_CROP.value)
            try:
                policy = ResizePolicy(resize)
            except ValueError:
                choices = ", ".join(p.value for p in ResizePolicy)
                raise BundleError(f"{where}: input.resize is {resize!r}, expected one of {choices}") from None
            if int(data.get("channels", 3)) != 3:
                raise BundleError(f"{where}: input.channels is {data.get('channels')}, expected 3")
            return cls(
                height=int(data["height"]),
                width=int(data["width"]),
                dtype=str(data.get("dtype", "uint8")),
                scale=float(quant.get("scale", 1.0)),
                zero_point=int(quant.get("zero_point", 0)),
                resize=policy,
                mean=_triple(norm.get("mean", 0.0)),
                std=_triple(norm.get("std", 1.0)),
                color=str(data.get("color", "RGB")),
                normalization=str(norm.get("where", "model")),
            )
        except KeyError as exc:
            raise BundleError(f"{where}: input section is missing {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where}: input section has a bad value ({exc})") from None
        except BundleError as exc:
            if str(exc).startswith(where):
                raise
            raise BundleError(f"{where}: {exc}") from None


def _triple(value) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = [float(v) for v in value]
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) != 3:
        raise ValueError(f"expected 1 or 3 values, got {len(values)}")
    return tuple(values)  # type: ignore[return-value]


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

"""The manifest schema: file names, schema version, and how a frame becomes the model's input and its output is read.

These are the parts of ``bundle.json`` that the preprocessing and the
classifier consume (:mod:`edgeclass.device.pipeline.preprocess` turns an
:class:`InputSpec` into pixels); they live with the contract, not with the
code that uses them, so the contract can be read without the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "bundle.json"
MODEL = "model.tflite"
EDGETPU_MODEL = "model_edgetpu.tflite"
LABELS = "labels.txt"
REPORT_DIR = "report"
OUTPUT_DTYPES = ("uint8", "int8", "float32")
SCORE_KINDS = ("probabilities", "logits")


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


@dataclass(frozen=True)
class OutputSpec:
    """How to read the model's output tensor as one score per label."""

    size: int
    dtype: str = "uint8"
    scale: float = 1.0
    zero_point: int = 0
    scores: str = "probabilities"  # "logits" -> the device applies softmax

    def to_json(self) -> dict:
        return {
            "size": self.size,
            "dtype": self.dtype,
            "quantization": {"scale": self.scale, "zero_point": self.zero_point},
            "scores": self.scores,
        }

    @classmethod
    def from_json(cls, data: dict, where: str = MANIFEST) -> "OutputSpec":
        try:
            quant = data.get("quantization") or {}
            spec = cls(
                size=int(data["size"]),
                dtype=str(data.get("dtype", "uint8")),
                scale=float(quant.get("scale", 1.0)),
                zero_point=int(quant.get("zero_point", 0)),
                scores=str(data.get("scores", "probabilities")),
            )
        except KeyError as exc:
            raise BundleError(f"{where}: output section is missing {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where}: output section has a bad value ({exc})") from None
        if spec.dtype not in OUTPUT_DTYPES:
            raise BundleError(f"{where}: output.dtype is {spec.dtype!r}, expected one of {', '.join(OUTPUT_DTYPES)}")
        if spec.scores not in SCORE_KINDS:
            raise BundleError(f"{where}: output.scores is {spec.scores!r}, expected one of {', '.join(SCORE_KINDS)}")
        return spec

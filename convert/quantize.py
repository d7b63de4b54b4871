"""Keras model -> TFLite: full-integer int8 post-training quantization (or float32).

The route that works with TensorFlow 2.21 / Keras 3 is ``model.export()`` to a
SavedModel, then ``TFLiteConverter.from_saved_model``; ``from_concrete_functions``
fails at calibration. The export fixes the batch at 1: the Edge TPU needs
tensor sizes known at compile time, and a ``-1`` batch in the TFLite
``shape_signature`` is exactly the "dynamic-sized tensor" it refuses.

Imports TensorFlow: only the conversion command loads this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgeclass.device.errors import EdgeclassError
from edgeclass.train.quiet import load_tensorflow, native_output_to_debug_log

from .progress import Progress, no_progress

log = logging.getLogger(__name__)
load_tensorflow()  # TensorFlow's C++ start-up chatter only with -v
# TensorFlow logs "Assets written to ..." at INFO through Python logging; the CLI runs at INFO.
logging.getLogger("tensorflow").setLevel(logging.WARNING)

IO_TYPES = ("uint8", "int8")


class ConversionError(EdgeclassError):
    """The model cannot be converted as asked."""


@dataclass(frozen=True)
class Normalization:
    """Pixel normalisation split off the model: ``real = (pixel - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_model(path: Path):
    """Load ``model.keras``; a file Keras cannot read is a user error naming it."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, TypeError for unknown layers...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"{path}: Keras cannot load it ({first})") from None


def check_model(model, path: Path, input_size: int, num_labels: int) -> tuple[int, int]:
    """Refuse models the bundle cannot describe; return the input (height, width)."""
    if len(model.inputs) != 1:
        raise ConversionError(
            f"{path}: the model has {len(model.inputs)} inputs; an image classifier bundle needs exactly one (H, W, 3) image input"
        )
    if len(model.outputs) != 1:
        raise ConversionError(f"{path}: the model has {len(model.outputs)} outputs; expected one score vector")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[2] is None:
        raise ConversionError(f"{path}: input shape is {list(shape)}, expected [batch, height, width, 3] with a fixed size")
    height, width = int(shape[1]), int(shape[2])
    if (height, width) != (input_size, input_size):
        raise ConversionError(f"{path}: input is {height}x{width} but config.json says input_size {input_size}")
    out = tuple(model.outputs[0].shape)
    if out[-1] != num_labels:
        raise ConversionError(f"{path}: the model outputs {out[-1]} scores but labels.txt has {num_labels} labels")
    return height, width


def split_normalization(model, path: Path):
    """Return ``(model without its leading Rescaling layer, Normalization)``.

    Used for ``--normalization device``: the pixel scaling leaves the graph and
    the Pi applies it in its lookup table instead. Only a Rescaling layer fed
    directly and solely by the model input can be split off without changing
    the maths.
    """
    import keras

    first = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    consumers = [layer for layer in first if any(t is model.inputs[0] for t in _inputs_of(layer))]
    if len(consumers) != 1 or not isinstance(consumers[0], keras.layers.Rescaling):
        names = ", ".join(type(layer).__name__ for layer in consumers) or "nothing"
        raise ConversionError(
            f"{path}: --normalization device needs a Rescaling layer right after the input, found {names}; "
            "use --normalization model"
        )
    rescale = consumers[0]
    scale = np.broadcast_to(np.asarray(rescale.scale, np.float64), (3,))
    offset = np.broadcast_to(np.asarray(rescale.offset, np.float64), (3,))
    # x * scale + offset == (x - mean) / std  with  std = 1/scale, mean = -offset/scale
    norm = Normalization(tuple(float(v) for v in -offset / scale), tuple(float(v) for v in 1.0 / scale))
    return keras.Model(rescale.output, model.outputs[0]), norm


def _inputs_of(layer) -> list:
    try:
        value = layer.input
    except (AttributeError, ValueError):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def export_saved_model(model, out_dir: Path) -> Path:
    """Export the inference graph with a fixed batch of 1 (see module docstring)."""
    import tensorflow as tf

    shape = [1, *[int(d) for d in model.inputs[0].shape[1:]]]
    model.export(str(out_dir), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])
    return out_dir


def convert_float(saved_model: Path) -> bytes:
    """A float32 TFLite model (the accuracy reference and the ``--float`` bundle)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    with native_output_to_debug_log("TFLite converter"):
        return converter.convert()


def convert_int8(saved_model: Path, calibration: np.ndarray, io: str = "uint8", per_tensor: bool = False,
                 normalization: Normalization | None = None, progress: Progress = no_progress) -> bytes:
    """Full-integer int8 TFLite: int8 weights and activations, ``io`` input/output.

    ``calibration`` is (N, H, W, 3) uint8 resized pixels; each is fed once (as
    the model's float input) to measure activation ranges. ``per_tensor``
    quantizes conv weights with one scale per tensor instead of per output
    channel (older accelerators need it; per-channel is usually more accurate).
    """
    import tensorflow as tf

    if io not in IO_TYPES:
        raise ConversionError(f"--io is {io!r}, expected one of {', '.join(IO_TYPES)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8 if io == "uint8" else tf.int8
    converter.inference_output_type = converter.inference_input_type
    if per_tensor:
        # The converter's only switch for per-tensor weights (private but stable since TF 2.4).
        converter._experimental_disable_per_channel = True
    converter.representative_dataset = _representative(calibration, normalization, progress)
    try:
        with native_output_to_debug_log("TFLite converter"):
            return converter.convert()
    except Exception as exc:  # the MLIR converter raises ConverterError, RuntimeError, ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"int8 conversion failed: {first}") from exc


def _representative(calibration: np.ndarray, normalization: Normalization | None,
                    progress: Progress) -> Callable[[], Iterator[list[np.ndarray]]]:
    def generate():
        with progress("calibrating", len(calibration)) as advance:
            for i, image in enumerate(calibration):
                x = image[None].astype(np.float32)
                if i == 0:
                    # The input tensor's quantization comes from the smallest and
                    # largest value calibration shows it. Photos that never reach
                    # 0 or 255 (dim scenes, the synthetic test images) would give a
                    # range like 0..240, and the Pi would clip every brighter pixel.
                    # Two corner pixels of one image pin the range to the full 0..255
                    # the camera can deliver, at no measurable cost to other ranges.
                    x[0, 0, 0, :] = 0.0
                    x[0, 0, 1, :] = 255.0
                if normalization is not None:
                    x = (x - np.float32(normalization.mean)) / np.float32(normalization.std)
                yield [x]
                advance()
    return generate


def predict_keras(model, images: np.ndarray, batch_size: int = 32, progress: Progress = no_progress) -> np.ndarray:
    """Float Keras probabilities for (N, H, W, 3) uint8 resized pixels."""
    import keras

    out = []
    with progress("float Keras", len(images)) as advance:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].astype(np.float32)
            out.append(keras.ops.convert_to_numpy(model(chunk, training=False)).astype(np.float32))
            advance(len(chunk))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def tensorflow_version() -> str:
    import tensorflow as tf

    return tf.__version__

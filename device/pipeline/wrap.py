"""Wrapping an existing TFLite classifier (and its labels) into a bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle import InputSpec, OutputSpec, ResizePolicy, read_labels, write_bundle
from ..errors import BundleError, ModelError
from .interpreter import has_edgetpu_op, make_interpreter


def pixel_normalization(dtype: str, scale: float, zero_point: int) -> tuple[float, float]:
    """The (mean, std) under which raw pixel bytes *are* the quantized input.

    Most quantized classifiers (Coral's among them) expect the image bytes fed
    as they are: q = p for uint8, q = p - 128 for int8. Solving
    ``(p - mean) / (std * scale) + zero_point = q`` for that gives
    ``std = 1 / scale`` and ``mean = zero_point`` (uint8) or ``zero_point + 128`` (int8).
    """
    if dtype == "float32":
        return 127.5, 127.5  # the MobileNet convention: pixels to [-1, 1]
    std = 1.0 / scale
    mean = float(zero_point) if dtype == "uint8" else float(zero_point + 128)
    return mean, std


def create_bundle_from_model(
    model: Path,
    labels_file: Path,
    out_dir: Path,
    *,
    resize: ResizePolicy = ResizePolicy.CENTER_CROP,
    mean: float | None = None,
    std: float | None = None,
    scores: str = "probabilities",
    edgetpu_model: Path | None = None,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Make a bundle from a CPU TFLite classifier, reading its tensors from the model itself.

    ``mean``/``std`` default to :func:`pixel_normalization`. An Edge TPU
    compiled model is refused as ``model`` (the CPU needs the plain one) and
    accepted as ``edgetpu_model``.
    """
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"{model}: no such model file")
    if has_edgetpu_op(model):
        raise ModelError(
            f"{model}: is compiled for the Edge TPU; pass the CPU model as --model and this one as --edgetpu-model"
        )
    if edgetpu_model is not None:
        if not Path(edgetpu_model).is_file():
            raise ModelError(f"{edgetpu_model}: no such model file")
        if not has_edgetpu_op(Path(edgetpu_model)):
            raise ModelError(f"{edgetpu_model}: does not contain the Edge TPU custom op; it is not an Edge TPU model")
    interpreter = make_interpreter(model, num_threads=1)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{model}: has {len(inputs)} inputs and {len(outputs)} outputs, expected one of each")
    inp, out = inputs[0], outputs[0]
    shape = [int(d) for d in inp["shape"]]
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        raise ModelError(f"{model}: input shape is {shape}, expected [1, height, width, 3]")
    in_dtype = np.dtype(inp["dtype"]).name
    in_scale, in_zero = inp["quantization"]
    if in_dtype not in ("uint8", "int8", "float32"):
        raise ModelError(f"{model}: input dtype {in_dtype} is not supported (uint8, int8 or float32)")
    default_mean, default_std = pixel_normalization(in_dtype, float(in_scale) or 1.0, int(in_zero))
    input_spec = InputSpec(
        height=shape[1],
        width=shape[2],
        dtype=in_dtype,
        scale=float(in_scale) or 1.0,
        zero_point=int(in_zero),
        resize=ResizePolicy(resize),
        mean=(default_mean if mean is None else mean,) * 3,
        std=(default_std if std is None else std,) * 3,
        normalization="device",
    )
    out_dtype = np.dtype(out["dtype"]).name
    out_scale, out_zero = out["quantization"]
    size = int(np.prod(out["shape"]))
    labels = read_labels(Path(labels_file))
    if len(labels) != size:
        raise BundleError(f"{labels_file}: has {len(labels)} labels but {model} outputs {size} scores")
    output_spec = OutputSpec(size=size, dtype=out_dtype, scale=float(out_scale) or 1.0, zero_point=int(out_zero), scores=scores)
    return write_bundle(
        out_dir,
        model=model,
        labels=labels,
        input_spec=input_spec,
        output_spec=output_spec,
        name=name,
        edgetpu_model=edgetpu_model,
        provenance={"source_model": model.name, "made_by": "edgeclass bundle create"},
        edgetpu={"compiled": edgetpu_model is not None, "source": "supplied" if edgetpu_model else None},
        force=force,
    )

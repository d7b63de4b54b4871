"""The ``edgeclass convert`` command.

Imports nothing heavy at module level: the device CLI attaches this command on
every machine, including a Pi without TensorFlow, and TensorFlow loads only
inside the command when a conversion actually runs. The Edge TPU pre-flight of
an existing .tflite file (``edgeclass convert MODEL.tflite --edgetpu-check``)
needs no TensorFlow at all.
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from edgeclass.device.errors import EdgeclassError

log = logging.getLogger(__name__)


class IOType(str, Enum):
    uint8 = "uint8"
    int8 = "int8"


class Temperature(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class WhereNormalize(str, Enum):
    model = "model"
    device = "device"


def register(app: typer.Typer) -> None:
    """Attach ``convert`` to the main ``edgeclass`` app."""
    app.command("convert")(convert)


def convert(
    source: Path = typer.Argument(..., help="Training directory (from 'edgeclass train'); or, with --edgetpu-check alone, a .tflite file or bundle directory to check."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Bundle directory to create."),
    io: IOType = typer.Option(IOType.uint8, "--io", help="Input/output tensor type of the int8 model."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="One weight scale per tensor instead of per output channel (for older accelerators; MobileNetV2 loses most of its accuracy this way, which --max-drop catches)."),
    calibration_size: int = typer.Option(200, "--calibration-size", min=1, help="Train images used to calibrate int8 ranges (stratified, every class present)."),
    bias_correction: bool = typer.Option(True, "--bias-correction/--no-bias-correction", help="Correct each int8 layer's bias so its mean output per channel matches the float model's on calibration images (removes the systematic part of the rounding error)."),
    float_model: bool = typer.Option(False, "--float", help="Ship a float32 TFLite model instead of int8."),
    max_drop: float = typer.Option(1.0, "--max-drop", min=0.0, help="Refuse the int8 model when its accuracy on the VALIDATION split is more than this many percentage points below float (the test split is only reported)."),
    min_agreement: float = typer.Option(0.97, "--min-agreement", min=0.0, max=1.0, help="Refuse the int8 model when its top-1 answer equals float Keras' on fewer than this fraction of the validation images."),
    normalization: WhereNormalize = typer.Option(WhereNormalize.model, "--normalization", help="Where pixel normalisation happens: inside the model, or on the device (needs a leading Rescaling layer)."),
    edgetpu: bool = typer.Option(False, "--edgetpu", help="Also compile for the Coral Edge TPU (needs edgetpu_compiler); runs the pre-flight first."),
    edgetpu_check: bool = typer.Option(False, "--edgetpu-check", help="Print the Edge TPU pre-flight: which ops will run on the TPU, and where the graph falls back to the CPU."),
    edgetpu_compiler: Optional[Path] = typer.Option(None, "--edgetpu-compiler", help="Path to edgetpu_compiler (default: found on PATH)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory (only once the new bundle is complete)."),
    name: Optional[str] = typer.Option(None, "--name", help="Bundle name (default: the output directory's name)."),
    seed: int = typer.Option(0, "--seed", help="Seed for choosing calibration images."),
    temperature: Temperature = typer.Option(Temperature.auto, "--temperature", help="Temperature scaling of the scores, fitted on the VALIDATION split and folded into the model's last layer: auto (when the validation scores are not calibrated), on, off."),
) -> None:
    """Convert a training directory into a device bundle: int8 TFLite, measured accuracy cost, optional Edge TPU model."""
    if _is_model_to_check(source):
        if not edgetpu_check or output is not None:
            raise EdgeclassError(
                f"{source}: a model or bundle can only be pre-flight checked here (edgeclass convert {source} --edgetpu-check); "
                "to convert, pass a training directory; to wrap a .tflite in a bundle use 'edgeclass bundle create'"
            )
        _print_preflight(_model_in(source), detailed=True)
        return
    if output is None:
        raise EdgeclassError(f"{source}: missing -o/--output BUNDLE_DIR (where to write the bundle)")

    from .pipeline import ConvertOptions, convert_training_dir
    from edgeclass.train.progress import progress_bar
    from edgeclass.device.pipeline.machine import machine_summary

    options = ConvertOptions(
        io=io.value, per_tensor=per_tensor, calibration_size=calibration_size, bias_correction=bias_correction,
        float_model=float_model, max_drop=max_drop, min_agreement=min_agreement, normalization=normalization.value, edgetpu=edgetpu,
        edgetpu_compiler=edgetpu_compiler, force=force, seed=seed, name=name, temperature=temperature.value,
    )
    result = convert_training_dir(source, output, options, progress=progress_bar)
    m = result.metrics
    typer.echo(result.comparison_text.rstrip())
    candidate = "float TFLite" if float_model else f"int8 ({io.value} I/O)"
    cand_key = "float_tflite_accuracy" if float_model else "int8_accuracy"
    g = m["gate"]
    typer.echo(
        f"gate        validation: float Keras {g['float_accuracy']:.2%}, {candidate} {g[cand_key]:.2%} "
        f"(drop {g['drop_pp']:+.2f} pp, limit {max_drop:g}), agreement {g['agreement']:.2%} (min {min_agreement:.0%}) "
        f"on {g['images']} images: passed"
    )
    typer.echo(
        f"test        float Keras {m['float_accuracy']:.2%}, {candidate} {m[cand_key]:.2%} "
        f"(drop {m['drop_pp']:+.2f} pp), agreement {m['agreement']:.2%} on {m['test_images']} images (reported, not gated)"
    )
    sizes = result.sizes
    line = f"size        float TFLite {_kib(sizes['float_tflite_bytes'])}"
    if "int8_tflite_bytes" in sizes:
        line += f", int8 {_kib(sizes['int8_tflite_bytes'])} ({sizes['int8_tflite_bytes'] / sizes['float_tflite_bytes']:.0%} of float)"
    typer.echo(line + f"; converted in {m['conversion_seconds']:.1f} s")
    typer.echo(f"calibrated  {result.calibration_text.partition(': ')[2]}")
    typer.echo(f"measured on {machine_summary(m['measured_on'])} (a Pi's Arm CPU may answer a few images differently: "
               "'edgeclass bundle evaluate' there measures its own accuracy)")
    typer.echo(f"edge tpu    pre-flight: {result.preflight.summary()}")
    if edgetpu_check:
        _print_table(result.preflight)
    if result.compile_report is not None:
        typer.echo(f"edge tpu    {result.compile_report.summary()}")
    typer.echo(f"bundle      {result.bundle} (loaded back with the device loader: ok); "
               f"page: {result.bundle / 'report' / 'index.html'}")


def _is_model_to_check(source: Path) -> bool:
    return source.suffix == ".tflite" or (source.is_dir() and (source / "bundle.json").is_file())


def _model_in(source: Path) -> Path:
    if source.is_dir():
        return source / "model.tflite"
    return source


def _print_preflight(model: Path, detailed: bool) -> None:
    from .edgetpu_ops import check_edgetpu

    result = check_edgetpu(model)
    typer.echo(result.summary())
    if detailed:
        _print_table(result)


def _print_table(result) -> None:
    rows = result.table()
    if not rows:
        return
    typer.echo(f"\n{'Operator':<30} {'Count':<10} Status")
    for op, count, status in rows:
        typer.echo(f"{op:<30} {count:<10} {status}")


def _kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"

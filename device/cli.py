"""The ``edgeclass`` command.

Device commands (run, predict, bench, bundle) live here and import only
``edgeclass.device``. The workstation commands (train, evaluate, convert, demo)
are attached from ``edgeclass.train.cli`` and ``edgeclass.convert.cli``, whose
module level imports nothing heavy: TensorFlow loads inside those commands
only, so a Pi without TensorFlow still gets a working ``edgeclass`` with a
clear message if someone runs ``edgeclass train`` there.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .errors import EdgeclassError, parse_choice as _choice

app = typer.Typer(
    name="edgeclass",
    help="Train an image classifier, convert it to int8 TFLite, and run it live on a Raspberry Pi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bundle_app = typer.Typer(help="Make and inspect model bundles (model.tflite + labels + bundle.json).", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")

log = logging.getLogger("edgeclass")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeclass {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    setup_logging(logging.DEBUG if verbose else logging.INFO)


def setup_logging(level: int = logging.INFO) -> None:
    """Plain one-line logs on stderr (journald adds its own timestamps under systemd)."""
    root = logging.getLogger()
    if not any(getattr(h, "_edgeclass", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._edgeclass = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


@bundle_app.command("create")
def bundle_create(
    model: Path = typer.Option(..., "--model", "-m", exists=True, dir_okay=False, help="A CPU TFLite classifier (one image input, one score output)."),
    labels: Path = typer.Option(..., "--labels", "-l", exists=True, dir_okay=False, help="Text file, one label per line, line i = output i."),
    output: Path = typer.Option(..., "--output", "-o", help="Bundle directory to create."),
    resize: str = typer.Option("center_crop", "--resize", help="How frames become the input size: center_crop or stretch."),
    mean: Optional[float] = typer.Option(None, help="Pixel mean for normalisation. Default: raw pixel bytes are the quantized input."),
    std: Optional[float] = typer.Option(None, help="Pixel std for normalisation (see --mean)."),
    scores: str = typer.Option("probabilities", help="What the output holds: probabilities or logits (softmax applied on the device)."),
    edgetpu_model: Optional[Path] = typer.Option(None, "--edgetpu-model", exists=True, dir_okay=False, help="The same model compiled for the Edge TPU."),
    name: Optional[str] = typer.Option(None, help="Bundle name (default: the output directory's name)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Wrap an existing TFLite classifier and its labels into a bundle, reading input/output details from the model."""
    from .bundle_create import create_bundle_from_model
    from .preprocess import ResizePolicy

    policy = _choice(ResizePolicy, resize, "--resize")
    if scores not in ("probabilities", "logits"):
        raise EdgeclassError(f"--scores is {scores!r}, expected probabilities or logits")
    out = create_bundle_from_model(model, labels, output, resize=policy, mean=mean, std=std, scores=scores,
                                   edgetpu_model=edgetpu_model, name=name, force=force)
    typer.echo(f"bundle written to {out}")
    _print_bundle_info(out, verify=False)


@bundle_app.command("info")
def bundle_info(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    verify: bool = typer.Option(False, "--verify", help="Also load the model in the interpreter and run one test inference."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Print what the device will do with a bundle (hashes are always checked)."""
    if as_json:
        from .bundle import load_bundle

        typer.echo(json.dumps(load_bundle(bundle).manifest, indent=2))
        if verify:
            _verify_inference(bundle)
        return
    _print_bundle_info(bundle, verify=verify)


def _print_bundle_info(path: Path, verify: bool) -> None:
    from .bundle import load_bundle

    b = load_bundle(path)
    spec, out = b.input, b.output
    lines = [
        f"bundle      {b.path}  ({b.name}, schema {b.manifest['schema_version']}, hashes ok)",
        f"labels      {len(b.labels)}: {' | '.join(b.labels[:6])}{', …' if len(b.labels) > 6 else ''}",
        f"input       {spec.height}x{spec.width} {spec.color} {spec.dtype}"
        + (f" (scale {spec.scale:g}, zero point {spec.zero_point})" if spec.dtype != "float32" else ""),
        f"resize      {spec.resize.value}",
        "normalise   " + ("inside the model" if spec.normalization == "model"
                          else f"on the device: (pixel - {_fmt(spec.mean)}) / {_fmt(spec.std)}"),
        f"output      {out.size} {out.scores} as {out.dtype}" + (f" (scale {out.scale:g}, zero point {out.zero_point})" if out.dtype != "float32" else ""),
        "edge tpu    " + ("model_edgetpu.tflite (used when libedgetpu.so.1 loads, else the CPU model)" if b.edgetpu_model_path else "no (CPU model only)"),
    ]
    for key in ("float_accuracy", "int8_accuracy", "agreement"):
        if key in b.metrics:
            lines.append(f"{key:<12}{b.metrics[key]}")
    typer.echo("\n".join(lines))
    if verify:
        _verify_inference(path)


def _verify_inference(path: Path) -> None:
    import time

    import numpy as np

    from .bundle import load_bundle
    from .classifier import open_classifier
    from .preprocess import Preprocessor

    b = load_bundle(path)
    classifier = open_classifier(b, num_threads=1)
    frame = np.full((b.input.height, b.input.width, 3), 127, np.uint8)
    start = time.perf_counter()
    scores = classifier.scores(Preprocessor(b.input)(frame))
    ms = (time.perf_counter() - start) * 1000
    if scores.shape != (len(b.labels),) or not np.all(np.isfinite(scores)):
        raise EdgeclassError(f"{b.model_path}: test inference gave {scores.shape} scores, expected {len(b.labels)} finite values")
    typer.echo(f"verified    test inference ok on {classifier.describe()} in {ms:.1f} ms")


def _fmt(values) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


@app.command()
def predict(
    paths: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    bundle: Path = typer.Option(..., "--bundle", "-b", help="Bundle directory."),
    top: int = typer.Option(3, "--top-k", "-k", min=1, help="How many labels to show per image."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image: path, label, score, top_k."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads (default: all cores)."),
    edgetpu: str = typer.Option("auto", "--edgetpu", help="auto, on or off."),
) -> None:
    """Classify image files and folders; files that are not images are skipped and listed."""
    from .bundle import load_bundle
    from .classifier import EdgeTPU, open_classifier
    from .images import list_images
    from .predict import predict_files
    from .preprocess import Preprocessor

    b = load_bundle(bundle)
    listing = list_images(paths)
    classifier = open_classifier(b, num_threads=threads, edgetpu=_choice(EdgeTPU, edgetpu, "--edgetpu"))
    failed = list(listing.skipped)
    for skipped in listing.skipped:
        typer.echo(f"skipped {skipped}: not an image file", err=True)
    done = 0
    for result in predict_files(classifier, Preprocessor(b.input), b.labels, listing.images, k=top):
        if result.error:
            typer.echo(f"skipped {result.error}", err=True)
            failed.append(result.path)
            continue
        done += 1
        best = result.top_k[0]
        if as_json:
            typer.echo(json.dumps({
                "path": str(result.path),
                "label": best.label,
                "score": round(best.score, 6),
                "top_k": [{"label": s.label, "score": round(s.score, 6)} for s in result.top_k],
            }))
        else:
            rest = ", ".join(f"{s.label} {s.score:.3f}" for s in result.top_k[1:])
            typer.echo(f"{result.path}: {best.label} {best.score:.3f}" + (f"  ({rest})" if rest else ""))
    if failed:
        typer.echo(f"{done} images classified, {len(failed)} files skipped", err=True)
    if done == 0:
        raise EdgeclassError(f"no images classified among {', '.join(map(str, paths))}")


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", dir_okay=False, help="Service config (TOML, e.g. /etc/edgeclass/device.toml). Options given here override it; it overrides the bundle's defaults."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="Bundle directory (or \\[model] bundle in --config)."),
    source: Optional[str] = typer.Option(None, "--source", "-s", help="Camera index (0), /dev/videoN, rtsp:// or http:// URL, video file, image folder, or picamera2 (or \\[source] source in --config)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many classified frames."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.0, help="Stop after this many seconds."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where results go: - for stdout (default), or a file (appended)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="jsonl (one JSON object per result) or human (default without --config)."),
    emit: Optional[str] = typer.Option(None, "--emit", help="all: every frame (default without --config); changes: when the label changes, plus a heartbeat."),
    heartbeat: Optional[float] = typer.Option(None, "--heartbeat", min=0.1, help="Seconds between repeats of an unchanged label (--emit changes; default 10)."),
    top: Optional[int] = typer.Option(None, "--top-k", "-k", min=1, help="Labels per result (default 3)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Below this smoothed score the answer is 'unknown' (default 0.5)."),
    smoothing: Optional[float] = typer.Option(None, "--smoothing", min=0.0, max=0.99, help="Moving-average weight kept from past frames (0 = none, the default; 0.8 ≈ last 5)."),
    stats_interval: Optional[float] = typer.Option(None, "--stats", min=0.0, help="Seconds between fps/latency stats records (0 = none, the default without --config)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads (default: all cores; one fewer leaves a core for capture)."),
    edgetpu: Optional[str] = typer.Option(None, "--edgetpu", help="auto (default), on or off."),
    width: Optional[int] = typer.Option(None, help="Camera capture width."),
    height: Optional[int] = typer.Option(None, help="Camera capture height."),
    fps: Optional[float] = typer.Option(None, help="Camera capture frame rate (with --realtime: the pace of a file)."),
    stall_timeout: Optional[float] = typer.Option(None, "--stall-timeout", min=0.1, help="Seconds without a frame before the source is reopened (default 5)."),
    give_up_after: Optional[float] = typer.Option(None, "--give-up-after", min=0.0, help="Seconds without a good frame before exiting non-zero (0 = never; default 300)."),
    loop: bool = typer.Option(False, "--loop", help="Replay a video file or image folder forever."),
    realtime: bool = typer.Option(False, "--realtime", help="Pace a video file or image folder at its frame rate, like a camera."),
    wait_for_source: bool = typer.Option(False, "--wait-for-source", help="Keep retrying a camera that is absent at start (default: fail at once; always on with --config)."),
    state_file: Optional[Path] = typer.Option(None, "--state-file", help="Write the health state file here (default: none, or \\[service] state_file with --config)."),
    save_uncertain: Optional[Path] = typer.Option(None, "--save-uncertain", help="Save frames whose top score is below \\[uncertain] threshold (0.3) into this folder, JPEG + JSON."),
    summary_json: Optional[Path] = typer.Option(None, "--summary-json", help="Write the run summary (fps, latencies) to this JSON file."),
) -> None:
    """Classify frames live from a camera, stream, video file or image folder (also the systemd service's command).

    Under systemd (Type=notify): READY=1 after the first classified frame,
    STATUS= lines, WATCHDOG=1 from the frame loop, STOPPING=1 on SIGTERM;
    SIGHUP re-reads --config and reloads the bundle (the old model keeps
    running if the new one fails validation).
    """
    from .classifier import EdgeTPU
    from .runtime import Emit
    from .serve import run_service
    from .sinks import OutputFormat

    if config is None and (bundle is None or source is None):
        raise EdgeclassError("run needs --bundle and --source, or --config FILE (with [model] bundle and [source] source)")
    cli_values = {
        "model": {"bundle": bundle and str(bundle), "threads": threads,
                  "edgetpu": edgetpu and _choice(EdgeTPU, edgetpu, "--edgetpu").value},
        "source": {"source": source, "width": width, "height": height, "fps": fps,
                   "stall_timeout": stall_timeout, "give_up_after": give_up_after},
        "decision": {"top_k": top, "threshold": threshold, "smoothing": smoothing, "heartbeat": heartbeat},
        "output": {"format": fmt and _choice(OutputFormat, fmt, "--format").value, "path": output,
                   "emit": emit and _choice(Emit, emit, "--emit").value, "stats_interval": stats_interval},
        "service": {"state_file": state_file and str(state_file)},
        "uncertain": {"dir": save_uncertain and str(save_uncertain)},
    }
    summary = run_service(config, cli_values, max_frames=max_frames, duration=duration, loop=loop,
                          realtime=realtime, wait_for_source=wait_for_source)
    log.info("%d frames in %.1f s: %.1f fps, latency p50 %.1f ms p95 %.1f ms, %d dropped, %d reopens",
             summary["frames"], summary["seconds"], summary["fps"], summary["latency_ms_p50"],
             summary["latency_ms_p95"], summary["dropped"], summary["reopens"])
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if summary["frames"] == 0:
        raise EdgeclassError(f"{summary['source']}: no frames were classified")


@app.command()
def bench(
    bundle: Path = typer.Option(..., "--bundle", "-b", help="Bundle directory."),
    frames: int = typer.Option(600, "--frames", min=10, help="Frames in the generated 640x480 test video."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads (default: cores - 1, at least 1)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with all figures."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Where to write the test video (default: a temporary directory)."),
) -> None:
    """Measure the device pipeline on this machine: invoke rate, pipeline rate, naive loop, preprocessing, start-up, memory."""
    from .bench import run_benchmark

    results = run_benchmark(bundle, frames=frames, threads=threads, workdir=workdir,
                            progress=None if as_json else typer.echo)
    if as_json:
        typer.echo(json.dumps(results))


def _attach_workstation_commands() -> None:
    """Attach train/evaluate/convert/demo when those packages provide them."""
    for module_name in ("edgeclass.train.cli", "edgeclass.convert.cli", "edgeclass.convert.demo"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(app)


_attach_workstation_commands()

from . import service_cli  # noqa: E402  (stdlib-only: systemd unit, releases, deploy)

service_cli.register(app, bundle_app)


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    try:
        app()
    except EdgeclassError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

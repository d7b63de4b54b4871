"""``edgeclass bundle create|info|evaluate|install|rollback``: make, inspect, measure and install bundles."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import EdgeclassError, printable
from ..errors import parse_choice as _choice
from .app import bundle_app


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
    from ..bundle import ResizePolicy
    from ..pipeline.wrap import create_bundle_from_model

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
        from ..bundle import load_bundle

        typer.echo(json.dumps(load_bundle(bundle).manifest, indent=2))
        if verify:
            _verify_inference(bundle)
        return
    _print_bundle_info(bundle, verify=verify)


def _print_bundle_info(path: Path, verify: bool) -> None:
    from ..bundle import load_bundle

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
    # The name, labels and metrics are the bundle author's text: no terminal control codes.
    typer.echo("\n".join(printable(line) for line in lines))
    if verify:
        _verify_inference(path)


def _verify_inference(path: Path) -> None:
    from ..pipeline.classifier import EdgeTPU
    from ..pipeline.verify import verify_bundle

    verified = verify_bundle(path, threads=1, edgetpu=EdgeTPU.AUTO)
    typer.echo(f"verified    test inference ok on {verified.classifier.describe()} in {verified.inference_ms:.1f} ms")


def _fmt(values) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


@bundle_app.command("evaluate")
def bundle_evaluate(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    dataset: Path = typer.Argument(..., help="A folder with one sub-folder of images per label; with --split-file, the folder its paths are relative to."),
    split_file: Optional[Path] = typer.Option(None, "--split-file", help="A training run's split.json (or the run directory): evaluate one of its splits."),
    split: Optional[str] = typer.Option(None, "--split", help="Which split of --split-file: train, val or test (default test)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: accuracy, images, per_class, machine, backend, ..."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write metrics.json, report.txt (and confusion_matrix.png where matplotlib is installed) into this folder."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write one JSON line per image (path, label, predicted, top_k, latency) to this file."),
    compare: Optional[Path] = typer.Option(None, "--compare-with", help="The -o folder of this evaluation on another machine (the workstation): report its accuracy there and the top-1 agreement, image by image."),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="Evaluate a stratified sample of at most this many images."),
    top: int = typer.Option(3, "--top-k", "-k", min=1, help="Also report top-k accuracy for this k (and keep k labels per image in --predictions)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads (default: all cores)."),
    edgetpu: str = typer.Option("auto", "--edgetpu", help="auto, on or off."),
) -> None:
    """Measure a bundle's accuracy on labelled images on this machine, through the same path as 'run'.

    Reports accuracy, per-class precision/recall/F1, the confusion matrix,
    top-k accuracy, inference latency, and the interpreter and machine it ran
    on, next to the accuracy bundle.json recorded when the bundle was made.
    """
    from ..bundle import load_bundle
    from ..pipeline.classifier import EdgeTPU, open_classifier
    from ..pipeline.dataset import list_class_folders, read_split_file, stratified_sample
    from ..pipeline.evaluate import (check_same_photos, compare_with, evaluate, read_evaluation, report_text,
                                     write_predictions, write_report)

    if split is not None and split_file is None:
        raise EdgeclassError("--split needs --split-file (a training run's split.json)")
    b = load_bundle(bundle)
    if split_file is not None:
        items = read_split_file(split_file, split or "test", dataset, b.labels)
        source = {"dataset": str(dataset), "split_file": str(split_file), "split": split or "test"}
    else:
        items = list_class_folders(dataset, b.labels)
        source = {"dataset": str(dataset), "split_file": None, "split": None}
    if max_images is not None and max_images < len(items):
        items = stratified_sample(items, max_images)
        source["sampled"] = max_images
    for path in (output, predictions):
        if path is not None and path.resolve().is_relative_to(Path(dataset).resolve()):
            raise EdgeclassError(f"{path}: is inside the dataset folder {dataset}; write results elsewhere (the dataset is never written to)")
    if compare is not None:
        other = read_evaluation(compare)
        check_same_photos(compare, other[1], [item.rel for item in items])
    classifier = open_classifier(b, num_threads=threads, edgetpu=_choice(EdgeTPU, edgetpu, "--edgetpu"))
    with _progress_bar("evaluating", len(items), enabled=not as_json) as advance:
        result = evaluate(b, classifier, items, k=top, on_image=lambda _r: advance(), source=source)
    if not result.results:
        raise EdgeclassError(f"{dataset}: none of the {len(items)} images could be read")
    if compare is not None:
        result.compared_with = compare_with(result, compare, *other)
    if predictions is not None:
        write_predictions(result, predictions)
    if output is not None:
        write_report(result, output)
    if as_json:
        typer.echo(json.dumps(result.to_json()))
    else:
        typer.echo(report_text(result), nl=False)


def _progress_bar(description: str, total: int, enabled: bool):
    """A rich progress bar on stderr when it is a terminal; otherwise nothing (logs and pipes stay clean)."""
    import contextlib

    if not (enabled and sys.stderr.isatty()):
        return contextlib.nullcontext(lambda: None)
    from rich.progress import Progress

    @contextlib.contextmanager
    def bar():
        with Progress(transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda: progress.advance(task)
    return bar()


@bundle_app.command("install")
def bundle_install(
    bundle: Path = typer.Argument(..., help="Bundle directory to install."),
    root: Path = typer.Option(..., "--root", help="Releases root (/var/lib/edgeclass on a Pi)."),
    keep: int = typer.Option(3, "--keep", min=1, help="Releases to keep (2 or more to be able to roll back)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Copy a bundle (bundle.json and the files it lists, nothing else) into ROOT/releases/, verify it there, sync it, and switch ROOT/current to it atomically.

    Refused: symlinks, FIFOs and device files, names outside the bundle, unlisted
    files, a file over 256 MB or 512 MB in all. Unfinished copies left by an
    install that died (ROOT/releases/.incoming-*) are removed.
    """
    from ..fleet.releases import install_bundle

    switch = install_bundle(bundle, root, keep=keep)
    if as_json:
        typer.echo(json.dumps(switch.to_json()))
        return
    typer.echo(f"installed {switch.current.path}")
    typer.echo(f"current -> {switch.current.name}" + (f" (previous: {switch.previous.name})" if switch.previous else ""))
    for path in switch.removed:
        typer.echo(f"removed {path}")


@bundle_app.command("rollback")
def bundle_rollback(
    root: Path = typer.Option(..., "--root", help="Releases root (/var/lib/edgeclass on a Pi)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Switch ROOT/current back to the release it replaced."""
    from ..fleet.releases import rollback

    switch = rollback(root)
    if as_json:
        typer.echo(json.dumps(switch.to_json()))
        return
    typer.echo(f"current -> {switch.current.name} (was {switch.previous.name})")


@bundle_app.command("releases")
def bundle_releases(
    root: Path = typer.Option(..., "--root", help="Releases root (/var/lib/edgeclass on a Pi)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """List the releases under ROOT, oldest first, and which ones current and previous point at."""
    from ..fleet.releases import describe_releases

    summary = describe_releases(root)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    marks = {summary["current"]: "current", summary["previous"]: "previous"}
    for name in summary["releases"]:
        mark = marks.get(str((root / "releases" / name).resolve()))
        typer.echo(f"{name}" + (f"  <- {mark}" if mark else ""))
    if not summary["releases"]:
        typer.echo(f"no release installed under {root}")
    for problem in summary["problems"]:
        typer.echo(f"problem: {problem}")
    for name in summary["incoming"]:
        typer.echo(f"unfinished copy: {root / 'releases' / name} (removed by the next install)")

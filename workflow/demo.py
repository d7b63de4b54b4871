"""``edgeclass demo``: the whole product on this machine, in minutes, with no downloads.

dataset (generated, or the user's) -> train -> int8 convert with the accuracy
gate -> a video of unseen samples -> the device runtime on it, exactly as
``edgeclass run`` would. Prints one line per stage and ends with PASS or FAIL.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer

from edgeclass.device.errors import EdgeclassError

log = logging.getLogger(__name__)

GENERATED_SPLIT = (0.7, 0.1, 0.2)  # a larger test split: 1 pp of accuracy is then ~2 images, not 1
# The demo's int8 gate, on its 80 generated validation images. `edgeclass
# convert` defaults to 1.0 point and 97% agreement, but on 80 images that is
# under one image and two changed answers. A model trained for a few minutes
# from random weights has many near-ties, and quantization flips them: its
# agreement with float was 91-96% on the test images of separate runs, so
# 3-7 of the 80 validation answers change, and when most of those were right,
# int8 is 4-5 points down. The gate is there to catch a broken conversion
# (wrong scales, swapped channels), which loses tens of points and agrees on a
# fraction of the images: 6 points and 85% catch that, and do not fail a
# healthy conversion of a weak model on the throw of a few coins.
DEMO_MAX_DROP = 6.0
DEMO_MIN_AGREEMENT = 0.85


@dataclass
class StageReport:
    name: str
    seconds: float
    summary: str


@dataclass
class DemoResult:
    workdir: Path
    stages: list[StageReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures


def _cached_imagenet_weights(alpha: float) -> Path | None:
    """The ImageNet MobileNetV2 backbone file in the Keras cache, at any input size, if present."""
    from edgeclass.train.model import keras_models_dir

    folder = keras_models_dir()
    for rows in (224, 192, 160, 128, 96):
        path = folder / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
        if path.is_file():
            return path
    return None


def frame_from_image(rgb, size=(640, 480)):
    """Place an image in a camera-sized frame so the device's centre crop sees the image's centre square.

    Scale so the shorter side fills the frame height, then crop or pad
    (grey) around the centre: the frame's central square is then exactly the
    square that training cropped from the original image.
    """
    import cv2
    import numpy as np

    w, h = size
    scale = h / min(rgb.shape[:2])
    resized = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    frame = np.full((h, w, 3), 114, np.uint8)
    rh, rw = resized.shape[:2]
    # Centre-align: crop what overflows, pad what is short.
    src_x, dst_x = max(0, (rw - w) // 2), max(0, (w - rw) // 2)
    src_y, dst_y = max(0, (rh - h) // 2), max(0, (h - rh) // 2)
    cw, ch = min(w, rw), min(h, rh)
    frame[dst_y:dst_y + ch, dst_x:dst_x + cw] = resized[src_y:src_y + ch, src_x:src_x + cw]
    return frame


def _video_from_test_split(training_dir: Path, path: Path, limit: int = 300) -> list[str]:
    """A video of the test split's images (never seen in training); returns the true label per frame."""
    import cv2

    from edgeclass.device.pipeline.images import load_image
    from edgeclass.train.rundir import load_training_dir

    td = load_training_dir(training_dir)
    items = td.split_items("test")
    step = max(1, math.ceil(len(items) / limit))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (640, 480))
    truth = []
    try:
        for image_path, label in items[::step]:
            writer.write(cv2.cvtColor(frame_from_image(load_image(image_path)), cv2.COLOR_RGB2BGR))
            truth.append(td.labels[label])
    finally:
        writer.release()
    return truth


def run_demo(workdir: Path, data: Path | None = None, *, per_class: int = 160, alpha: float = 0.35,
             input_size: int | None = None, epochs: int | None = None, min_accuracy: float = 0.8,
             max_drop: float | None = None, echo=print) -> DemoResult:
    """Run every stage; each stage's line is passed to ``echo`` as soon as it finishes."""
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir
    from edgeclass.train.config import TrainConfig
    from edgeclass.train.run import train

    from . import synthetic

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(workdir)

    def stage(name: str, started: float, summary: str) -> None:
        report = StageReport(name, time.perf_counter() - started, summary)
        result.stages.append(report)
        echo(f"[{name:<8}] {report.seconds:6.1f} s  {summary}")

    # 1. data
    started = time.perf_counter()
    if data is None:
        data_dir = workdir / "data"
        if data_dir.exists():
            shutil.rmtree(data_dir)  # ours from a previous demo run, regenerated identically
        synthetic.write_dataset(data_dir, per_class=per_class, seed=0)
        split = GENERATED_SPLIT
        stage("data", started, f"generated {per_class * len(synthetic.CLASSES)} images of "
                               f"{len(synthetic.CLASSES)} shapes ({', '.join(synthetic.CLASSES)}) in {data_dir}")
    else:
        data_dir = Path(data).resolve()
        if not data_dir.is_dir():
            raise EdgeclassError(f"{data}: no such dataset folder (expected one sub-folder of images per class)")
        split = (0.8, 0.1, 0.1)
        stage("data", started, f"using {data_dir} (read only)")

    # 2. train
    started = time.perf_counter()
    weights_file = _cached_imagenet_weights(alpha)
    if weights_file is None:
        echo(f"[train   ] no ImageNet MobileNetV2 alpha {alpha:g} weights in the Keras cache: training from random "
             "weights (put mobilenet_v2_weights_tf_dim_ordering_tf_kernels_*_no_top.h5 in ~/.keras/models for better accuracy)")
    size = input_size or (96 if data is None else 160)
    pretrained = weights_file is not None
    config = TrainConfig(
        data_dir=str(data_dir), alpha=alpha, input_size=size,
        weights=str(weights_file) if pretrained else "none",
        epochs=epochs if epochs is not None else (6 if pretrained else 25),
        head_epochs=30 if pretrained else 3,
        lr=3e-4 if pretrained else 2e-3,
        patience=4 if pretrained else 8,
        split=split, seed=0,
    )
    training_dir = workdir / "training"
    metrics = train(config, training_dir, force=True)
    float_acc = float(metrics["accuracy"])
    stage("train", started, f"MobileNetV2 alpha {alpha:g} at {size}px "
                            f"({'ImageNet weights' if pretrained else 'random init'}): float test accuracy {float_acc:.3f}")

    # 3. convert
    started = time.perf_counter()
    bundle_dir = workdir / "bundle"
    if max_drop is None:  # the converter's own default for real data
        max_drop = DEMO_MAX_DROP if data is None else 1.0
    try:
        min_agreement = DEMO_MIN_AGREEMENT if data is None else ConvertOptions.min_agreement
        converted = convert_training_dir(training_dir, bundle_dir,
                                         ConvertOptions(max_drop=max_drop, min_agreement=min_agreement, force=True))
    except EdgeclassError as exc:  # the accuracy gate, most likely: a FAIL, not a crash
        stage("convert", started, f"failed: {exc}")
        result.failures.append(f"conversion: {exc}")
        _write_summary(workdir, result)
        return result
    m = converted.metrics
    drop_pp = m["drop_pp"]
    sizes = converted.sizes
    stage("convert", started, f"int8 test accuracy {m['int8_accuracy']:.3f} (float {m['float_accuracy']:.3f}, "
                              f"drop {drop_pp:.2f} pp, agreement {m['agreement']:.3f}); "
                              f"{sizes.get('int8_tflite_bytes', 0) / 1024:.0f} KB vs {sizes['float_tflite_bytes'] / 1024:.0f} KB float; "
                              f"Edge TPU pre-flight: {converted.preflight.summary()}")

    # 4. video
    started = time.perf_counter()
    video = workdir / "demo.avi"
    if data is None:
        truth = synthetic.write_video(video, per_class=12)
    else:
        truth = _video_from_test_split(training_dir, video)
    stage("video", started, f"{len(truth)} frames of unseen samples at 640x480 in {video}")

    # 5. run on the device runtime
    started = time.perf_counter()
    from edgeclass.device.outputs.stream import StreamOutput
    from edgeclass.device.pipeline.config import DecisionConfig, SourceConfig
    from edgeclass.device.pipeline.loop import Runner
    from edgeclass.device.pipeline.verify import verify_bundle

    results_path = workdir / "results.jsonl"
    results_path.unlink(missing_ok=True)
    verified = verify_bundle(bundle_dir)
    stream = StreamOutput("jsonl", results_path)
    try:
        summary = Runner(verified.bundle, verified.classifier, SourceConfig(source=str(video)),
                         DecisionConfig(threshold=0.0), outputs=[stream]).run()
    finally:
        stream.close()
    rows = [json.loads(line) for line in results_path.read_text().splitlines()]
    correct = sum(1 for r in rows if r["frame"] < len(truth) and r["label"] == truth[r["frame"]])
    live_acc = correct / len(truth) if truth else 0.0
    stage("run", started, f"{summary['frames']} frames at {summary['fps']:.1f} fps, latency p50 "
                          f"{summary['latency_ms_p50']:.1f} ms; live accuracy {live_acc:.3f}; results in {results_path}")

    result.figures = {
        "float_accuracy": m["float_accuracy"], "int8_accuracy": m["int8_accuracy"], "drop_pp": round(drop_pp, 2),
        "agreement": m["agreement"], "live_accuracy": round(live_acc, 3), "fps": summary["fps"],
        "frames": summary["frames"], "pretrained": pretrained,
    }
    if m["int8_accuracy"] < min_accuracy:
        result.failures.append(f"int8 test accuracy {m['int8_accuracy']:.3f} is below {min_accuracy:g}")
    if live_acc < min_accuracy:
        result.failures.append(f"live accuracy on the video {live_acc:.3f} is below {min_accuracy:g}")
    if summary["frames"] != len(truth):
        result.failures.append(f"the runtime classified {summary['frames']} of {len(truth)} frames")
    _write_summary(workdir, result)
    return result


def _write_summary(workdir: Path, result: DemoResult) -> None:
    (workdir / "demo-summary.json").write_text(json.dumps(
        {"passed": result.passed, "failures": result.failures, "figures": result.figures,
         "stages": [{"name": s.name, "seconds": round(s.seconds, 1), "summary": s.summary} for s in result.stages]},
        indent=2) + "\n")


def demo(
    workdir: Path = typer.Option(Path("demo-out"), "--workdir", "-w", help="Where every artefact goes (dataset, training directory, bundle, video, results)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Your own folder-per-class dataset instead of the generated one (never modified)."),
    per_class: int = typer.Option(160, "--per-class", min=10, help="Generated images per class."),
    alpha: float = typer.Option(0.35, "--alpha", help="MobileNetV2 width multiplier."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Model input size (default 96 generated, 160 with --data)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=0, help="Fine-tuning epochs (default: 25 from random weights, 6 from ImageNet)."),
    min_accuracy: float = typer.Option(0.8, "--min-accuracy", min=0.0, max=1.0, help="PASS needs int8 test accuracy and live accuracy at least this."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", min=0.0, help="Conversion fails if int8 loses more than this many percentage points on the validation split (default 6 on the generated 80-image one, where one image is 1.25 points; 1 with --data)."),
) -> None:
    """Run the whole pipeline end to end on a generated dataset (or --data): train, convert, run on a video; PASS or FAIL."""
    from edgeclass.train.cli import _require_tensorflow

    _require_tensorflow()
    started = time.perf_counter()
    result = run_demo(workdir, data, per_class=per_class, alpha=alpha, input_size=input_size, epochs=epochs,
                      min_accuracy=min_accuracy, max_drop=max_drop, echo=typer.echo)
    w = result.workdir
    typer.echo(f"\nartefacts in {w}:\n  dataset    {data or w / 'data'}\n  training   {w / 'training'} (report/ inside)\n"
               f"  bundle     {w / 'bundle'}\n  video      {w / 'demo.avi'}\n  results    {w / 'results.jsonl'}\n"
               f"  summary    {w / 'demo-summary.json'}")
    total = time.perf_counter() - started
    if result.passed:
        typer.echo(f"\nPASS in {total:.0f} s")
        return
    typer.echo(f"\nFAIL in {total:.0f} s: " + "; ".join(result.failures))
    raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Attach ``demo`` to the main ``edgeclass`` app."""
    app.command("demo")(demo)

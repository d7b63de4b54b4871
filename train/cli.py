"""The ``edgeclass train``, ``edgeclass evaluate`` and ``edgeclass report`` commands.

Nothing heavy is imported at module level: the Pi runs the same ``edgeclass``
command without TensorFlow, and ``edgeclass --help`` must stay fast there.
TensorFlow, Keras and matplotlib load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeclass.device.errors import EdgeclassError, parse_choice as _choice

NO_TENSORFLOW = "TensorFlow is not installed: pip install 'edgeclass[train]'"


class MissingDependency(EdgeclassError):
    """A workstation dependency is not installed."""


def _check_tensorflow_installed() -> None:
    """Fail with one line when TensorFlow is not installed, without importing it (a Pi has only the device extra)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependency(NO_TENSORFLOW)


def _require_tensorflow() -> None:
    """Fail with one line (not an ImportError traceback) when TensorFlow is missing."""
    # TensorFlow's C++ start-up chatter (CUDA probing, instruction-set notices, oneDNN) only with -v.
    from .quiet import load_tensorflow

    try:
        load_tensorflow()  # the command needs it next anyway
    except ImportError:
        raise MissingDependency(NO_TENSORFLOW) from None


def _split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise EdgeclassError(f"--split {text!r}: expected three fractions like 0.8,0.1,0.1") from None
    if len(parts) != 3:
        raise EdgeclassError(f"--split {text!r}: expected three fractions (train,val,test) like 0.8,0.1,0.1")
    return parts  # type: ignore[return-value]


def train_command(
    data_dir: Path = typer.Argument(..., help="Folder with one sub-folder of images per class, or train/ val/ test/ folders of those."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Training directory to write (model.keras, labels.txt, report/...)."),
    backbone: str = typer.Option("mobilenet_v2", help="mobilenet_v2, mobilenet_v3_small or mobilenet_v3_large."),
    alpha: float = typer.Option(1.0, help="Width multiplier. MobileNetV2 ImageNet weights: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4; V3: 0.75, 1.0."),
    input_size: int = typer.Option(224, "--input-size", help="Square input size in pixels (MobileNet weights exist for 96, 128, 160, 192, 224)."),
    weights: str = typer.Option("imagenet", help="imagenet (Keras cache, $KERAS_HOME/models), none, or a path to backbone weights (.h5)."),
    epochs: int = typer.Option(10, help="Fine-tuning epochs (phase 2); 0 trains the head only."),
    head_epochs: int = typer.Option(30, "--head-epochs", help="Head epochs on cached frozen-backbone features (phase 1, cheap)."),
    fine_tune_layers: Optional[int] = typer.Option(None, "--fine-tune-layers", show_default="auto", help="Top backbone layers to unfreeze in phase 2; -1 = all, 0 = none; auto = 56 from pretrained weights, all with --weights none (BatchNorm stays frozen on pretrained weights)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per training step (per replica when training on several devices, see --devices)."),
    lr: float = typer.Option(1e-4, "--lr", help="Fine-tuning learning rate (warm-up, then cosine decay)."),
    warmup_epochs: int = typer.Option(1, "--warmup-epochs", help="Fine-tuning epochs over which the learning rate ramps up per step from 0."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Fine-tuning decoupled weight decay (AdamW); 0 = Adam."),
    head_lr: float = typer.Option(1e-3, "--head-lr", help="Head learning rate."),
    dropout: float = typer.Option(0.2, help="Dropout before the classifier."),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing"),
    patience: int = typer.Option(4, help="Stop fine-tuning after this many epochs without val-loss improvement; 0 = never."),
    refit: bool = typer.Option(False, "--refit/--no-refit", help="Once validation has chosen the epochs, train again on train+val for that many (about twice the training time; the validation figures then describe training photos)."),
    augment: str = typer.Option("default", help="none, default (flip,brightness=0.15,contrast=0.15,crop=0.25), or a list like flip,crop=0.08,rotation=0.05,zoom=0.15. crop=S trains on random crops covering S..1 of the whole photo's area (crop=0: on the device's centre crop)."),
    class_weights: str = typer.Option("auto", "--class-weights", help="auto (on when the largest class is 1.5x the smallest), on or off."),
    split: str = typer.Option("0.8,0.1,0.1", help="train,val,test fractions for a folder-per-class dataset."),
    seed: int = typer.Option(42, help="Seed for the split (each photo's split is a hash of the seed and its content), shuffling, augmentation and initialisation."),
    minimalistic: bool = typer.Option(True, "--minimalistic/--no-minimalistic", help="MobileNetV3 only: the Edge-TPU-friendly variant (no hard-swish)."),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="auto (on when training on GPUs), on or off: float16 compute with float32 weights; model.keras is float32 either way."),
    devices: str = typer.Option("auto", "--devices", help="Where to train: auto (every GPU, else the CPU), cpu, gpu (every GPU), gpu:N (the first N GPUs), or cpu:N (the CPU split into N logical devices: multi-replica training without a GPU, for trying it out). With several devices (tf.distribute.MirroredStrategy) --batch-size is per replica, the learning rates scale with the replica count, and BatchNorm trained from scratch is synchronised across replicas."),
    workers: int = typer.Option(0, help="Image decoding threads; 0 = one per CPU core."),
    check_only: bool = typer.Option(False, "--check-only", help="Scan and audit the dataset, print the audit and exit."),
    since: Optional[Path] = typer.Option(None, "--since", help="An earlier training directory: keep its photos in the splits it had them in, and report which photos are new and that its test photos are still test photos."),
    refuse_leakage: bool = typer.Option(False, "--refuse-leakage", help="Stop when a picture (or a near-duplicate of it) is in more than one of the dataset's train/val/test folders."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="A finished training directory (e.g. alpha 1.0) to distil into this model: its predictions on each training crop join the labels in the loss. Its training split must not hold this run's validation or test photos (same --seed and --split on the same data)."),
    distill_weight: float = typer.Option(0.5, "--distill-weight", help="With --teacher: the teacher's share A of the loss, (1-A)*cross-entropy + A*T^2*KL(teacher_T || student_T)."),
    distill_temperature: float = typer.Option(2.0, "--distill-temperature", help="With --teacher: temperature T that softens both models' probabilities in the distillation term."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUTPUT from its last completed epoch (uses its saved settings)."),
    force: bool = typer.Option(False, "--force", help="Replace a previous run's files in OUTPUT."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write a TensorBoard log to OUTPUT/logs/tensorboard."),
    search: Optional[int] = typer.Option(None, "--search", metavar="TRIALS", help="Hyperparameter search (Optuna): train TRIALS trials with different fine-tuning learning rate, depth, dropout, crop and colour jitter, keep the one with the lowest validation loss (OUTPUT/search/trials.json)."),
    search_minutes: Optional[float] = typer.Option(None, "--search-minutes", metavar="M", help="Start no search trial after M minutes of trials (with --search: whichever comes first)."),
) -> None:
    """Fine-tune an ImageNet MobileNet on a folder of labelled photos and write a training directory with a report."""
    from .config import Augment, Backbone, ClassWeights, TrainConfig

    config = TrainConfig(
        data_dir=str(data_dir),
        backbone=_choice(Backbone, backbone, "--backbone"),
        alpha=alpha,
        input_size=input_size,
        minimalistic=minimalistic,
        weights=weights,
        head_epochs=head_epochs,
        epochs=epochs,
        fine_tune_layers=fine_tune_layers,
        batch_size=batch_size,
        head_lr=head_lr,
        lr=lr,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
        dropout=dropout,
        label_smoothing=label_smoothing,
        patience=patience,
        refit=refit,
        augment=Augment.parse(augment),
        class_weights=_choice(ClassWeights, class_weights, "--class-weights"),
        split=_split(split),
        seed=seed,
        mixed_precision=mixed_precision,
        devices=devices.strip().lower(),
        workers=workers,
        teacher=str(teacher) if teacher is not None else None,
        distill_weight=distill_weight,
        distill_temperature=distill_temperature,
    )
    if check_only:
        from .run import check_dataset

        check_dataset(config, since=since, refuse_leakage=refuse_leakage)
        return
    if output is None:
        raise EdgeclassError("missing -o/--output: the training directory to write (e.g. -o runs/flowers)")
    if since is not None and resume:
        raise EdgeclassError("--since applies when a run starts; --resume continues with the split the run started with")
    from .run import check_before_training, train
    from .search import check_options

    _check_tensorflow_installed()  # first: on a device install that is the message that helps
    budget = check_options(search, search_minutes, config, resume)
    check_before_training(config, output, resume=resume, force=force, since=since)
    _require_tensorflow()
    try:
        metrics = train(config, output, resume=resume, force=force, tensorboard=tensorboard, since=since,
                        refuse_leakage=refuse_leakage, search=budget)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: continue with 'edgeclass train --resume -o {output} {data_dir}'", err=True)
        raise typer.Exit(130) from None
    gap = metrics.get("train_val_gap", {})
    typer.echo(
        f"test accuracy {metrics['accuracy']:.3f} on {metrics['num_images']} images "
        f"(train {gap.get('train_accuracy', float('nan')):.3f}, val {gap.get('val_accuracy', float('nan')):.3f}); "
        f"training directory: {Path(output)}"
    )


def evaluate_command(
    model: Path = typer.Argument(..., help="A training directory, or a .keras model with labels.txt next to it."),
    dataset: Optional[Path] = typer.Argument(None, help="Folder-per-class dataset (or train/val/test folders). Default: the training directory's own test split."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Report directory (default: MODEL/report for its own test split, else ./report)."),
    split: str = typer.Option("test", help="Which split to evaluate when DATASET has train/val/test folders."),
    batch_size: int = typer.Option(64, "--batch-size"),
    workers: int = typer.Option(0, help="Image decoding threads; 0 = one per CPU core."),
) -> None:
    """Evaluate a trained model on a folder dataset: metrics.json, classification report, confusion matrix, calibration, worst errors with Grad-CAM heatmaps, index.html."""
    if split not in ("train", "val", "test"):
        raise EdgeclassError(f"--split {split!r}: expected train, val or test")
    _require_tensorflow()
    from .evaluate import evaluate

    metrics, report_dir = evaluate(model, dataset, output, split=split, batch_size=batch_size, workers=workers)
    typer.echo(f"accuracy {metrics['accuracy']:.3f} on {metrics['num_images']} images; report: {report_dir}")


def report_command(
    run: Path = typer.Argument(..., help="A training directory (its report/ is read), or a report folder written by 'edgeclass evaluate -o'."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="A bundle converted from RUN: adds its float vs int8 figures and calibration."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the page (default: RUN/report/index.html)."),
    open_page: bool = typer.Option(False, "--open", help="Open the page in a web browser, where one exists."),
) -> None:
    """Rebuild the one-page HTML report of a run (and of its bundle): metrics, confusion, curves, calibration, heatmaps."""
    from .page import build_page
    from .page_sources import METRICS, PAGE, ReportError
    from .rundir import REPORT

    if not run.is_dir():
        raise ReportError(f"{run}: not a directory; expected a training directory (edgeclass train -o RUN) or a report folder")
    report_dir, run_dir = (run, None) if (run / METRICS).is_file() else (run / REPORT, run)
    if bundle is not None and not (bundle / "report" / METRICS).is_file():
        raise ReportError(f"{bundle / 'report' / METRICS}: missing; expected a bundle made by 'edgeclass convert' "
                          "(bundles made by 'edgeclass bundle create' have no conversion report)")
    target = output if output is not None else report_dir / PAGE
    page = build_page(report_dir, run_dir=run_dir, bundle_report=bundle / "report" if bundle else None,
                      bundle_path=bundle.resolve() if bundle else None, out=target)
    typer.echo(f"page: {page}")
    if open_page:
        import webbrowser

        if not webbrowser.open(page.resolve().as_uri()):
            typer.echo(f"no web browser found here: open {page} on a machine with one")


def register(app: typer.Typer) -> None:
    """Attach ``train``, ``evaluate`` and ``report`` to the main ``edgeclass`` app."""
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("report")(report_command)

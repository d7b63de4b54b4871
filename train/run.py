"""One training run, end to end: data dir in, training directory out.

Order of work (each step's output is on disk before the next starts, so
``--resume`` can pick up after any of them)::

    discover -> scan into the image cache -> split -> audit
    -> config.json, labels.txt, split.json, dataset.json
    -> head phase -> fine-tune epochs -> [--refit on train+val] -> report/
    -> model.keras (written last: its presence marks a complete run)

With ``--search`` the two training phases run once per trial instead
(search.py, files in ``search/``) and the best trial's best checkpoint is the
model (refitted with ``--refit``); everything before and after is the same.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from edgeclass.device.errors import EdgeclassError
from edgeclass.device.files import atomic_write

from . import rundir
from .audit import build_audit, class_weights, print_audit
from .callbacks import read_state, write_state
from .config import IMBALANCE_THRESHOLD, ClassWeights, TrainConfig
from .crops import WholePhotoWriter, WholePhotos, cache_short_side, index_file
from .dataset import DatasetError, Layout, Record, discover, scan
from .distill import TeacherError, check_labels, check_teacher, read_teacher, refuse_leaks
from .model import WeightsError
from .search import SEARCH_DIR, Budget, search_space
from .since import check_same_rule, compare_with_earlier, earlier_assignment, read_earlier_split
from .split import SplitPlan, plan_split, split_from_json, split_json

log = logging.getLogger(__name__)

SCAN = "scan.json"
LOGS = "logs"
# Everything a run writes; --force removes these and nothing else.
OUR_FILES = (rundir.MODEL, rundir.LABELS, rundir.CONFIG, rundir.SPLIT, rundir.DATASET, rundir.REPORT, rundir.CHECKPOINTS,
             LOGS, SEARCH_DIR)


class RunDirError(EdgeclassError):
    """The output directory cannot be used as asked."""


def check_dataset(config: TrainConfig, since: str | Path | None = None, refuse_leakage: bool = False) -> dict:
    """``--check-only``: scan, split and audit without writing anything; prints the audit (and checks ``--teacher``)."""
    layout = discover(config.data_dir)
    teacher = read_teacher(config.teacher) if config.teacher is not None else None
    if teacher is not None:
        check_labels(teacher, layout.labels)
    records = scan(layout, workers=config.workers)
    plan, audit = split_and_audit(layout, records, config, since, refuse_leakage)
    if teacher is not None:
        refuse_leaks(teacher, records, plan.indices, layout.data_dir)
    return audit


def split_and_audit(layout: Layout, records: list[Record], config: TrainConfig, since: str | Path | None,
                    refuse_leakage: bool) -> tuple[SplitPlan, dict]:
    """Split by content (keeping an earlier run's photos in place with ``since``), audit, print the audit."""
    earlier_doc = earlier = None
    if since is not None:
        earlier_doc = read_earlier_split(since)
        check_same_rule(earlier_doc, since, config.split, config.seed)
        earlier = earlier_assignment(earlier_doc, records, layout.data_dir)
    plan = plan_split(layout, records, config.split, config.seed, earlier)
    audit = build_audit(layout, records, plan)
    if earlier_doc is not None:
        audit["since"] = compare_with_earlier(earlier_doc, since, earlier, records, plan)
    print_audit(audit)
    if refuse_leakage and audit["leakage"]["groups"]:
        first = " = ".join(f"{g['path']} ({g['split']})" for g in audit["leakage"]["list"][0])
        raise DatasetError(f"{layout.data_dir}: {audit['leakage']['groups']} picture(s) appear in more than one split "
                           f"folder, e.g. {first}; remove the copies (or train without --refuse-leakage)")
    return plan, audit


def check_before_training(config: TrainConfig, out: str | Path, *, resume: bool = False, force: bool = False,
                          since: str | Path | None = None) -> None:
    """Every check that needs no TensorFlow (output directory, dataset layout, ``since``, ``teacher``), so a
    typo fails in a fraction of a second instead of after TensorFlow has loaded."""
    out = Path(out).expanduser().resolve()
    data_dir = Path(config.data_dir).expanduser().resolve()
    teacher = config.teacher
    if resume and (out / rundir.CONFIG).exists():
        # Resumed with the dataset and the teacher it started with.
        saved = TrainConfig.from_json(json.loads((out / rundir.CONFIG).read_text(encoding="utf-8")))
        data_dir, teacher = Path(saved.data_dir), saved.teacher
    _check_out(out, data_dir, resume, force)
    layout = discover(data_dir)
    if not resume and config.weights not in ("imagenet", "none") and not Path(config.weights).expanduser().is_file():
        raise WeightsError(f"--weights {config.weights}: no such file (expected imagenet, none, or a backbone .h5 weights file)")
    earlier_doc = None
    if since is not None:
        earlier_doc = read_earlier_split(since)
        check_same_rule(earlier_doc, since, config.split, config.seed)
    if teacher is not None:
        check_teacher(teacher, layout, config.split, config.seed, config.workers, earlier_doc, resume=resume)


def _check_out(out: Path, data_dir: Path, resume: bool, force: bool) -> list[str]:
    """Refuse an output directory that cannot be used as asked; returns our files already in it."""
    if out == data_dir or data_dir in out.parents:
        raise RunDirError(f"{out}: the output directory is inside the dataset {data_dir}; "
                          "its files would become part of the data next time (choose -o elsewhere)")
    if resume:
        if not (out / rundir.CONFIG).exists():
            raise RunDirError(f"{out}: nothing to resume (no {rundir.CONFIG}; start a run without --resume)")
        if (out / rundir.MODEL).exists():
            raise RunDirError(f"{out}: this run already finished ({rundir.MODEL} exists); nothing to resume")
        return []
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: is a file, expected a directory to write the training run into (choose another -o)")
    ours = []
    if out.exists() and any(out.iterdir()):
        ours = [name for name in OUR_FILES if (out / name).exists()]
        if not force:
            hint = "--resume to continue it, " if (out / rundir.CONFIG).exists() and not (out / rundir.MODEL).exists() else ""
            raise RunDirError(f"{out}: not empty ({', '.join(ours) or 'other files'}); use {hint}--force to replace "
                              "a previous run, or choose another -o")
    return ours


def _prepare_out(out: Path, data_dir: Path, resume: bool, force: bool) -> None:
    ours = _check_out(out, data_dir, resume, force)
    if resume:
        return
    for name in ours:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _discard_new_run(out: Path, ckpt: Path, logs: Path) -> None:
    """Remove what a run refused before training wrote (image caches, empty logs), so the same -o works again."""
    for folder in (ckpt, logs):
        shutil.rmtree(folder, ignore_errors=True)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def _scan_to_cache(layout: Layout, config: TrainConfig, ckpt: Path,
                   resume: bool) -> tuple[list[Record], np.ndarray, WholePhotos | None]:
    """Decode every image into ``checkpoints/images-N.npy`` (the device's centre crops) and, for random-crop
    training, into ``checkpoints/photos-S.bin`` (the whole photos); on resume, reuse both if no file changed."""
    size = config.input_size
    cache_path = ckpt / f"images-{size}.npy"
    short_side = cache_short_side(size)
    photos_path = ckpt / f"photos-{short_side}.bin"
    crops = config.augment.crop > 0
    scan_path = ckpt / SCAN
    if (resume and cache_path.exists() and scan_path.exists()
            and (not crops or (photos_path.exists() and index_file(photos_path).exists()))):
        saved = json.loads(scan_path.read_text(encoding="utf-8"))
        now = scan(layout, workers=config.workers, description="checking files", decode=False)
        if [(r.item.rel, r.sha256) for r in now] == [(d["path"], d["sha256"]) for d in saved["records"]]:
            log.info("dataset unchanged since the run started: reusing the decoded image cache")
            return ([Record.from_json(d) for d in saved["records"]], np.load(cache_path, mmap_mode="r"),
                    WholePhotos(photos_path) if crops else None)
        log.info("dataset files changed since the run started: decoding again")
    # A memmap on disk: bounded memory for any dataset size, and reusable by --resume.
    cache = np.lib.format.open_memmap(ckpt / "images-tmp.npy", mode="w+", dtype=np.uint8,
                                      shape=(len(layout.items), size, size, 3))
    whole = WholePhotoWriter(ckpt / "photos-tmp.bin", len(layout.items), short_side) if crops else None
    records = scan(layout, cache, (size, size), config.resize, config.workers, whole=whole)
    cache.flush()
    del cache
    if whole is not None:
        os.replace(whole.finish(), index_file(photos_path))
        os.replace(whole.path, photos_path)
    os.replace(ckpt / "images-tmp.npy", cache_path)
    _write_json(scan_path, {"input_size": size, "resize": config.resize.value, "records": [r.to_json() for r in records]})
    return records, np.load(cache_path, mmap_mode="r"), WholePhotos(photos_path) if crops else None


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, force: bool = False,
          tensorboard: bool = False, since: str | Path | None = None, refuse_leakage: bool = False,
          search: Budget | None = None) -> dict:
    """Train and write a complete training directory at ``out``; returns the test metrics.

    With ``resume``, ``config`` is ignored in favour of the one the run saved
    (a search run continues its search). ``since`` (an earlier training
    directory) keeps its photos in their splits and reports what is new;
    ``refuse_leakage`` stops on a picture that appears in two split folders.
    ``search`` runs a hyperparameter search within that budget (search.py).
    """
    from .fit import Data, device_setup, export_model

    started = time.perf_counter()
    out = Path(out).expanduser().resolve()
    data_dir = Path(config.data_dir).expanduser().resolve()
    # config.json["search"]: the budget and space at the start, the outcome added at the end.
    search_doc = None
    if search is not None:
        search_doc = {"objective": "val_loss", "budget": search.to_json(), "space": search_space(config)}
    if resume and (out / rundir.CONFIG).exists():
        saved_doc = json.loads((out / rundir.CONFIG).read_text(encoding="utf-8"))
        saved = TrainConfig.from_json(saved_doc)
        data_dir = Path(saved.data_dir)
        config = saved
        search_doc = saved_doc.get("search")
        log.info("resuming %s with the settings it started with (%s); other options are ignored", out, rundir.CONFIG)
    # First: splitting the CPU (--devices cpu:N) must precede TensorFlow's first use of its devices,
    # and devices that are not there fail before anything is written.
    placement = device_setup(config)
    if resume and (out / rundir.CONFIG).exists():
        _check_same_replicas(out, placement)
    _prepare_out(out, data_dir, resume, force)
    config = config.with_(data_dir=str(data_dir))
    if config.teacher is not None:
        config = config.with_(teacher=str(Path(config.teacher).expanduser().resolve()))
    ckpt = out / rundir.CHECKPOINTS
    logs = out / LOGS
    ckpt.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)

    layout = discover(data_dir)
    records, images, photos = _scan_to_cache(layout, config, ckpt, resume)
    if resume and (out / rundir.SPLIT).exists():
        split = split_from_json(json.loads((out / rundir.SPLIT).read_text(encoding="utf-8")), layout, records)
        plan = plan_split(layout, records, config.split, config.seed)  # the groups, for the audit
        plan.indices, plan.moved = split, []
        audit = build_audit(layout, records, plan)
        print_audit(audit)
    else:
        plan, audit = split_and_audit(layout, records, config, since, refuse_leakage)
        split = plan.indices
    teacher = None
    if config.teacher is not None:
        teacher = read_teacher(config.teacher)
        check_labels(teacher, layout.labels)
        if not resume:
            try:
                # The split made, the check is exact (check_before_training predicted it from hashes alone).
                refuse_leaks(teacher, records, split, data_dir)
            except TeacherError:
                _discard_new_run(out, ckpt, logs)
                raise

    labels = layout.labels
    index = {label: i for i, label in enumerate(labels)}
    label_rows = np.array([index[r.item.label] for r in records], dtype=np.int64)
    use_weights = config.class_weights is ClassWeights.ON or (
        config.class_weights is ClassWeights.AUTO and audit["imbalance_ratio"] > IMBALANCE_THRESHOLD)
    sample_weights = None
    if use_weights:
        train_counts = {label: audit["counts"][label]["train"] for label in labels}
        cw = class_weights(train_counts, labels)
        log.info("class weights on (imbalance %.2f): %s", audit["imbalance_ratio"], cw)
        sample_weights = np.array([cw[r.item.label] for r in records], dtype=np.float32)

    if not resume or not (out / rundir.SPLIT).exists():
        (out / rundir.LABELS).write_text("\n".join(labels) + "\n", encoding="utf-8")
        _write_json(out / rundir.SPLIT, split_json(layout, records, plan, config.split, config.seed))
        _write_json(out / rundir.DATASET, audit)
        extra = {"search": search_doc} if search_doc else {}
        if teacher is not None:
            extra["teacher"] = teacher.summary()
        _write_json(out / rundir.CONFIG, config.to_json(dataset_fingerprint=audit["fingerprint"], num_classes=len(labels),
                                                        class_weights_used=use_weights,
                                                        training=placement.record(config), **extra))

    import keras

    teacher_model = None
    if teacher is not None:
        from .distill import load_teacher_model

        # Loaded before the precision policy is set, outside any distribution scope: it only predicts.
        teacher_model = load_teacher_model(teacher, config.input_size)
        log.info("distilling from %s (%s alpha %s, %d px), weight %g, temperature %g", teacher.path,
                 teacher.config.get("backbone"), teacher.config.get("alpha"), teacher.input_size,
                 config.distill_weight, config.distill_temperature)
    data = Data(images, label_rows, sample_weights, split, len(labels), photos, teacher_model)
    keras.utils.set_random_seed(config.seed)
    tensorboard_dir = logs / "tensorboard" if tensorboard else None
    try:
        keras.mixed_precision.set_global_policy(placement.policy)
        if search_doc is not None:
            config, state, best_weights, model_dtypes = _search(config, search_doc, data, out, placement, resume,
                                                                tensorboard_dir)
        else:
            state, best_weights, model_dtypes = _train_once(config, data, ckpt, logs / rundir.HISTORY_CSV, placement,
                                                            resume, tensorboard_dir)
        if config.refit:
            # A refit has no checkpoints of its own: one interrupted starts again on --resume.
            from .refit import refit

            best_weights = refit(placement.scaled(config), data, state, ckpt, placement)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    run_info = {"mixed_precision": placement.mixed, **placement.record(config), "training_model": model_dtypes}
    final = export_model(config, len(labels), best_weights)
    metrics = _report(final, data, labels, out, state, config, run_info, started, [r.item.rel for r in records])
    # model.keras last: its presence is what marks the training directory complete.
    final.save(ckpt / "final.keras")
    os.replace(ckpt / "final.keras", out / rundir.MODEL)
    del data, photos  # the whole-photo memmap, before its file goes
    for leftover in [*ckpt.glob("images-*.npy"), *ckpt.glob("photos-*.bin*"), *ckpt.glob("*.optimizer.npz")]:
        leftover.unlink()  # resume-only state, and the image caches are large
    log.info("training directory complete: %s (test accuracy %.3f)", out, metrics["accuracy"])
    return metrics


def _train_once(config: TrainConfig, data, ckpt: Path, history_csv: Path, placement, resume: bool,
                tensorboard_dir: Path | None) -> tuple[dict, Path, dict]:
    """The two training phases, resumable from ``ckpt/state.json``; the state, the best weights and the
    training model's dtypes.

    The loops see the global batch and the scaled learning rates (``placement.scaled``); config.json keeps
    the per-replica batch, so a resumed run continues with the same one.
    """
    from .fit import build_training_model, fine_tune, train_head
    from .model import dtype_summary

    scaled = placement.scaled(config)
    state = (read_state(ckpt) if resume else None) or {"phase": "head"}
    with placement.strategy.scope():
        # On resume the weights come from the checkpoint, so the ImageNet file is not needed again.
        model = build_training_model(config, data.num_classes, placement, pretrained=state["phase"] == "head")
        dtypes = dtype_summary(model)
        if state["phase"] == "head":
            train_head(model, data, scaled, state, ckpt, history_csv)
        else:
            model.load_weights(ckpt / state["last_weights"])
        if state["phase"] == "finetune" and config.fine_tune_top != 0 and config.epochs > 0:
            fine_tune(model, data, scaled, state, ckpt, history_csv, tensorboard_dir)
    state["phase"] = "done"
    write_state(ckpt, state)
    return state, ckpt / state["best_weights"], dtypes


def _search(config: TrainConfig, search_doc: dict, data, out: Path, placement, resume: bool,
            tensorboard_dir: Path | None) -> tuple[TrainConfig, dict, Path, dict]:
    """The search instead of one training: the best trial's settings become the run's (config.json, with the
    search's outcome), its log the run's log; returns them with its state, best weights and model dtypes."""
    from .search import run_search

    result = run_search(config, Budget.from_json(search_doc["budget"]), search_doc["space"], data, out, placement,
                        resume=resume, tensorboard_dir=tensorboard_dir)
    shutil.copyfile(result.history_csv, out / LOGS / rundir.HISTORY_CSV)
    doc = json.loads((out / rundir.CONFIG).read_text(encoding="utf-8"))
    doc.update(result.config.to_json(), search={**search_doc, **result.summary})
    _write_json(out / rundir.CONFIG, doc)
    return result.config, result.state, result.weights, result.dtypes


def _check_same_replicas(out: Path, placement) -> None:
    """Warn when a resumed run trains on a different number of replicas than it started with."""
    started = json.loads((out / rundir.CONFIG).read_text(encoding="utf-8")).get("training", {}).get("replicas")
    if started is not None and started != placement.replicas:
        log.warning("this run started on %d replica(s) and continues on %d: the batch per replica stays, so the "
                    "global batch and the learning rates change", started, placement.replicas)


def _report(model, data, labels, out: Path, state: dict, config: TrainConfig, run_info: dict, started: float,
            names: list[str]) -> dict:
    from .evaluate import predict, report_on

    gap, scores = {}, {}
    for name in ("train", "val"):
        rows = data.split[name]
        scores[name] = probs = predict(model, data.images, rows, config.batch_size, f"accuracy on {name}")
        gap[f"{name}_accuracy"] = round(float((probs.argmax(1) == data.labels[rows]).mean()), 4)
    gap["gap"] = round(gap["train_accuracy"] - gap["val_accuracy"], 4)
    history = state.get("history", [])
    finetune = [h for h in history if h["phase"] == "finetune"]
    training = {
        "head_epochs": state.get("head_epochs_run"),
        "finetune_epochs": len(finetune),
        "best_epoch": state.get("best_epoch"),
        "best_val_loss": state.get("best_val_loss"),
        "frozen_backbone_forward_images_per_s": state.get("frozen_images_per_s"),
        "finetune_images_per_s": round(float(np.median([h["images_per_s"] for h in finetune])), 1) if finetune else None,
        "finetune_optimizer_steps": state.get("optimizer_steps"),
        "wall_seconds_this_process": round(time.perf_counter() - started, 1),
        **run_info,  # devices, replicas, batches, learning rates, precision
        "refit": state.get("refit"),
    }
    test = data.split["test"]
    extra = {"split": "test", "train_val_gap": gap, "training": training, "backbone": config.backbone.value,
             "alpha": config.alpha, "input_size": config.input_size}
    if config.teacher is not None:
        saved = json.loads((out / rundir.CONFIG).read_text(encoding="utf-8")).get("teacher")
        extra["distillation"] = {"teacher": saved if isinstance(saved, dict) else {"path": config.teacher},
                                 "weight": config.distill_weight, "temperature": config.distill_temperature}
    # The temperature is fitted on the validation split; a refit on train+val has no held-out images left for it.
    refit = config.refit
    val = None if refit or not data.split["val"] else (scores["val"], data.labels[data.split["val"]])
    return report_on(model, data.images, test, data.labels[test], labels, out / rundir.REPORT,
                     history=history, extra=extra, batch_size=config.batch_size, names=names, val=val,
                     no_fit_reason="the final model was trained on the validation split (--refit)" if refit else None,
                     run_dir=out)

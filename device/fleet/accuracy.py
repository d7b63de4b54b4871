"""``deploy --verify-accuracy``: the accuracy the Pi really delivers, next to the workstation's, or a rollback.

1. Here: the photos to check on, the test split of a training run (or any
   ``split.json``, or a folder-per-class dataset), a stratified sample of at
   most ``max_images``; copied with a split file that records each photo's
   sha256, and evaluated here by :func:`edgeclass.device.pipeline.evaluate.evaluate`,
   whose ``-o`` folder travels with the photos.
2. On the device, once the new release is installed and healthy: ``edgeclass
   bundle evaluate RELEASE PHOTOS --split-file ... --compare-with WORKSTATION
   -o ROOT/verification/RELEASE`` (as the service user). That folder is the
   release's record of both figures (metrics.json holds the device's
   accuracy, machine and backend and, under ``compared_with``, the
   workstation's, with the agreement and every photo that differs).
3. Here again: a drop beyond ``max_drop`` points fails the deploy like a
   failed health check, so it rolls back.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..bundle import Bundle
from ..errors import EdgeclassError
from ..pipeline.classifier import EdgeTPU, open_classifier
from ..pipeline.dataset import (SPLIT_FILE, LabelledImage, list_class_folders, read_split_file, split_entries,
                                stratified_sample)
from ..pipeline.evaluate import evaluate, write_report

VERIFICATION = "verification"  # ROOT/verification/<release name>/: the device's evaluation of that release
SAMPLE = "accuracy-sample"  # the uploaded folder: photos/, split.json, workstation/


@dataclass(frozen=True)
class AccuracyCheck:
    """What to verify on: a training run, a split.json or a dataset folder; how many photos; the allowed drop."""

    source: Path
    max_images: int = 200
    max_drop: float = 1.0  # accuracy points the device may lose against the workstation on the same photos


@dataclass(frozen=True)
class Sample:
    """The staged photos, ready to upload, and the workstation's evaluation of them."""

    folder: Path  # holds photos/, split.json, workstation/
    images: int
    source: str
    workstation: dict  # the workstation's ``bundle evaluate --json`` object

    def summary(self) -> str:
        ws = self.workstation
        return (f"{self.images} photos from {self.source}: {ws['accuracy']:.2%} on this machine "
                f"({ws['machine']['machine']}, {ws['machine']['cpu']})")


def photos_to_check(source: Path, labels) -> tuple[list[LabelledImage], str]:
    """The labelled photos of ``source`` (a training run, a split.json, or a folder per class) and how to name them."""
    source = Path(source)
    split_file = source / SPLIT_FILE if source.is_dir() and (source / SPLIT_FILE).is_file() else (
        source if source.is_file() else None)
    if split_file is None:
        return list_class_folders(source, labels), str(source)
    doc, _ = split_entries(split_file, "test")
    if not doc.get("data_dir"):
        raise EdgeclassError(f"{split_file}: has no data_dir; pass the dataset folder to --verify-accuracy instead")
    return read_split_file(split_file, "test", Path(doc["data_dir"]), labels), f"the test split of {split_file}"


def stage_sample(check: AccuracyCheck, bundle: Bundle, work: Path, threads: int | None = None) -> Sample:
    """Copy the photos to check on into ``work/accuracy-sample`` and evaluate the bundle on them here."""
    items, source = photos_to_check(check.source, bundle.labels)
    if len(items) > check.max_images:
        items = stratified_sample(items, check.max_images)
        source = f"a stratified sample of {len(items)} of {source}"
    folder = work / SAMPLE
    photos = folder / "photos"
    entries = []
    for item in items:
        target = photos / item.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.path, target)
        entries.append({"path": item.rel, "label": item.label, "sha256": hashlib.sha256(target.read_bytes()).hexdigest()})
    (folder / SPLIT_FILE).write_text(json.dumps({"data_dir": None, "test": entries}, indent=1) + "\n", encoding="utf-8")
    staged = [LabelledImage(photos / item.rel, item.rel, item.label) for item in items]
    classifier = open_classifier(bundle, num_threads=threads, edgetpu=EdgeTPU.AUTO)
    result = evaluate(bundle, classifier, staged, source={"dataset": source, "split_file": None, "split": "test"})
    write_report(result, folder / "workstation")
    return Sample(folder, len(items), source, result.to_json())


def device_command(options, release: str, remote_sample: str) -> str:
    """The device's ``bundle evaluate`` of ``release`` on the uploaded sample, recorded under ROOT/verification/.

    Records of releases that are no longer installed are removed in the same command.
    """
    record = f"{options.root}/{VERIFICATION}/{Path(release).name}"
    evaluate_cmd = options.edgeclass(
        "bundle", "evaluate", release, f"{remote_sample}/photos", "--split-file", f"{remote_sample}/{SPLIT_FILE}",
        "--compare-with", f"{remote_sample}/workstation", "--json", "-o", record, as_service_user=True)
    verification, releases = shlex.quote(f"{options.root}/{VERIFICATION}"), shlex.quote(f"{options.root}/releases")
    prune = (f'for d in {verification}/*/; do [ -d "$d" ] && [ ! -d {releases}/"$(basename "$d")" ] && '
             f'{_as(options)}rm -rf "$d"; done; true')
    return f"{evaluate_cmd} && {{ {prune}; }}"


def _as(options) -> str:
    return f"sudo -n -u {shlex.quote(options.as_user)} " if options.as_user else ""


def verdict(device: dict, check: AccuracyCheck) -> dict:
    """The deploy's record: both accuracies on the same photos, the agreement, the drop, passed or not."""
    other = device.get("compared_with") or {}
    if not other:
        raise EdgeclassError("the device's bundle evaluate did not compare with the workstation's evaluation")
    drop = float(other["drop_pp"])
    return {
        "images": device["images"],
        "workstation": {"accuracy": other["accuracy"], "machine": other["machine"], "backend": other["backend"]},
        "device": {"accuracy": device["accuracy"], "machine": device["machine"], "backend": device["backend"]},
        "agreement": other["agreement"],
        "drop_pp": drop,
        "max_drop_pp": check.max_drop,
        "passed": drop <= check.max_drop + 1e-9,
        "disagree": other["disagree"],
    }


def verdict_lines(record: dict) -> list[str]:
    """What deploy prints: both figures side by side, the agreement, the photos that differ."""
    ws, dev = record["workstation"], record["device"]
    lines = [
        f"accuracy  workstation {ws['accuracy']:.2%} ({ws['machine']['machine']}, {ws['machine']['cpu']}), "
        f"device {dev['accuracy']:.2%} ({dev['machine']['machine']}, {dev['machine']['cpu']}, {dev['backend']['interpreter']}"
        f"{' on the Edge TPU' if dev['backend']['edgetpu'] else ''}) on the same {record['images']} photos",
        f"accuracy  drop {record['drop_pp']:+.2f} points (limit {record['max_drop_pp']:g}), top-1 agreement {record['agreement']:.2%}",
    ]
    lines += [f"differs   {d['path']}: device {d['other'][0]} {d['other'][1]:.3f}, workstation {d['reference'][0]} "
              f"{d['reference'][1]:.3f}" for d in record["disagree"][:10]]
    if len(record["disagree"]) > 10:
        lines.append(f"differs   ... and {len(record['disagree']) - 10} more (see the release's verification record)")
    return lines

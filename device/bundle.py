"""The bundle: the one contract between the converter and the device.

A bundle is a directory::

    bundle.json            manifest (schema_version 1), see :func:`load_bundle`
    model.tflite           full-integer (or float) TFLite classifier
    model_edgetpu.tflite   optional: the same model compiled for the Edge TPU
    labels.txt             one label per line, line i = output index i
    report/                optional: evaluation report files

The manifest records everything the device must not guess (input geometry,
colour order, quantization, normalization, resize policy, output format) and
the sha256 of every file. :func:`load_bundle` refuses anything that does not
match, with one line naming the file and both values.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .errors import BundleError
from .preprocess import InputSpec

SCHEMA_VERSION = 1
MANIFEST = "bundle.json"
MODEL = "model.tflite"
EDGETPU_MODEL = "model_edgetpu.tflite"
LABELS = "labels.txt"
REPORT_DIR = "report"
OUTPUT_DTYPES = ("uint8", "int8", "float32")
SCORE_KINDS = ("probabilities", "logits")


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


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle."""

    path: Path
    manifest: dict
    labels: tuple[str, ...]
    input: InputSpec
    output: OutputSpec
    model_path: Path
    edgetpu_model_path: Path | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large models do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_labels(path: Path) -> list[str]:
    """Labels, one per line; blank trailing lines are ignored, blank inner lines refused."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file (expected one label per line)") from None
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text (expected one label per line)") from None
    lines = [line.strip() for line in text.rstrip("\n").split("\n")] if text.strip() else []
    for number, line in enumerate(lines, 1):
        if not line:
            raise BundleError(f"{path}: line {number} is empty (expected one label per line)")
    if not lines:
        raise BundleError(f"{path}: has no labels")
    return lines


def _read_manifest(bundle_dir: Path) -> dict:
    path = bundle_dir / MANIFEST
    if not bundle_dir.exists():
        raise BundleError(f"{bundle_dir}: no such bundle directory")
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: is a file, expected a bundle directory holding {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; {bundle_dir} is not a bundle (make one with 'edgeclass bundle create' or 'edgeclass convert')") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def _check_schema(manifest: dict, where: Path) -> None:
    version = manifest.get("schema_version")
    if version == SCHEMA_VERSION:
        return
    if not isinstance(version, int):
        raise BundleError(f"{where}: schema_version is {version!r}, expected the integer {SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{where}: schema_version {version} was written by a newer edgeclass; this edgeclass "
            f"{__version__} reads schema {SCHEMA_VERSION}: upgrade edgeclass on this device"
        )
    raise BundleError(
        f"{where}: schema_version {version} is not supported (this edgeclass reads schema {SCHEMA_VERSION}); "
        "re-create the bundle with 'edgeclass convert' or 'edgeclass bundle create'"
    )


def load_bundle(path: str | Path, verify_hashes: bool = True) -> Bundle:
    """Load and check a bundle directory; raise :class:`BundleError` on any mismatch.

    Checks the schema version, that every listed file exists and (unless
    ``verify_hashes`` is false) has the recorded sha256, that labels.txt agrees
    with the manifest's labels and output size. Whether the model file's own
    tensors match the manifest is checked when the interpreter loads it
    (:func:`edgeclass.device.classifier.open_classifier`).
    """
    bundle_dir = Path(path)
    manifest = _read_manifest(bundle_dir)
    where = bundle_dir / MANIFEST
    _check_schema(manifest, where)

    files = manifest.get("files")
    if not isinstance(files, dict) or MODEL not in files or LABELS not in files:
        raise BundleError(f"{where}: 'files' must list the sha256 of {MODEL} and {LABELS}")
    for name, expected in files.items():
        file_path = bundle_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{where}: file entry {name!r} points outside the bundle")
        if not file_path.is_file():
            raise BundleError(f"{file_path}: missing, but {MANIFEST} lists it")
        if verify_hashes:
            actual = sha256_file(file_path)
            if actual != expected:
                raise BundleError(
                    f"{file_path}: sha256 is {actual[:16]}…, {MANIFEST} expects {str(expected)[:16]}… "
                    "(file changed or damaged after the bundle was made; copy the bundle again)"
                )

    input_spec = InputSpec.from_json(_section(manifest, "input", where), str(where))
    output_spec = OutputSpec.from_json(_section(manifest, "output", where), str(where))
    labels = read_labels(bundle_dir / LABELS)
    if len(labels) != output_spec.size:
        raise BundleError(
            f"{bundle_dir / LABELS}: has {len(labels)} labels but the model outputs {output_spec.size} scores "
            "(one label per line, line i naming output i)"
        )
    manifest_labels = manifest.get("labels")
    if manifest_labels is not None and list(manifest_labels) != labels:
        raise BundleError(f"{bundle_dir / LABELS}: labels differ from the 'labels' list in {MANIFEST}")

    edgetpu = bundle_dir / EDGETPU_MODEL if EDGETPU_MODEL in files else None
    return Bundle(
        path=bundle_dir,
        manifest=manifest,
        labels=tuple(labels),
        input=input_spec,
        output=output_spec,
        model_path=bundle_dir / MODEL,
        edgetpu_model_path=edgetpu,
        metrics=dict(manifest.get("metrics") or {}),
    )


def _section(manifest: dict, key: str, where: Path) -> dict:
    value = manifest.get(key)
    if not isinstance(value, dict):
        raise BundleError(f"{where}: the '{key}' section is missing or not an object")
    return value


def write_bundle(
    out_dir: str | Path,
    *,
    model: Path,
    labels: list[str],
    input_spec: InputSpec,
    output_spec: OutputSpec,
    name: str | None = None,
    edgetpu_model: Path | None = None,
    report_dir: Path | None = None,
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    edgetpu: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write a complete bundle to ``out_dir`` atomically and return its path.

    Everything is written into a temporary sibling directory which is renamed
    into place only when complete, so a failure never leaves a half-written
    bundle. An existing ``out_dir`` is refused unless ``force``; then it is
    replaced only after the new one is complete.
    """
    out_dir = Path(out_dir)
    if len(labels) != output_spec.size:
        raise BundleError(f"labels: {len(labels)} labels given but the model outputs {output_spec.size} scores")
    if out_dir.exists() and not force:
        raise BundleError(f"{out_dir}: already exists; choose another output directory or pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        shutil.copyfile(model, tmp / MODEL)
        (tmp / LABELS).write_text("\n".join(labels) + "\n", encoding="utf-8")
        if edgetpu_model is not None:
            shutil.copyfile(edgetpu_model, tmp / EDGETPU_MODEL)
        if report_dir is not None and Path(report_dir).is_dir():
            shutil.copytree(report_dir, tmp / REPORT_DIR)
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": name or out_dir.name,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "edgeclass_version": __version__,
            "labels": list(labels),
            "input": input_spec.to_json(),
            "output": output_spec.to_json(),
            "files": files,
            "provenance": provenance or {},
            "metrics": metrics or {},
            "edgetpu": edgetpu or {"compiled": edgetpu_model is not None},
        }
        if extra:
            manifest.update(extra)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    # Replace: move the old one aside first so there is never a moment with
    # neither, then delete it.
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)

"""Loading a bundle directory and verifying it against its manifest (hashes, labels, sections)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import BundleError
from .contents import check_file_names, read_manifest_bytes, scan_bundle, sha256_listed
from .manifest import (
    EDGETPU_MODEL,
    LABELS,
    MANIFEST,
    MODEL,
    SCHEMA_VERSION,
    InputSpec,
    OutputSpec,
)


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
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{path}: missing; {bundle_dir} is not a bundle (make one with 'edgeclass bundle create' or 'edgeclass convert')")
    try:
        manifest = json.loads(read_manifest_bytes(path).decode("utf-8"))
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

    Checks the schema version; that the directory holds ``bundle.json`` and
    the regular files it lists and nothing else, within the size caps
    (:mod:`.contents`); that every listed file (unless ``verify_hashes`` is
    false) has the recorded sha256; that labels.txt agrees with the
    manifest's labels and output size. Whether the model file's own
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
    check_file_names(files, where)
    scan_bundle(bundle_dir, files)  # before any listed file is opened: no symlink or FIFO is ever read
    for name, expected in files.items():
        file_path = bundle_dir / name
        if verify_hashes:
            actual = sha256_listed(file_path)
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

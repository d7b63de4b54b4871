"""Writing a bundle directory atomically: the converter's and ``bundle create``'s last step.

The bundle is world-readable (0755 directories, 0644 files) whatever the
umask: ``scp`` keeps modes, and on a Pi the service user must read what the
deploying user copied. Every file it writes is listed in ``bundle.json``
(``report/`` files too), as :mod:`.contents` requires.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BundleError
from ..files import DIR_MODE, FILE_MODE, atomic_write, fsync_dir, fsync_tree
from .load import sha256_file
from .manifest import (
    EDGETPU_MODEL,
    LABELS,
    MANIFEST,
    MODEL,
    REPORT_DIR,
    SCHEMA_VERSION,
    InputSpec,
    OutputSpec,
)


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
        os.chmod(tmp, DIR_MODE)  # mkdtemp makes 0700, which scp would carry to the Pi
        _copy_file(model, tmp / MODEL)
        atomic_write(tmp / LABELS, "\n".join(labels) + "\n")
        if edgetpu_model is not None:
            _copy_file(edgetpu_model, tmp / EDGETPU_MODEL)
        if report_dir is not None and Path(report_dir).is_dir():
            _copy_report(Path(report_dir), tmp / REPORT_DIR)
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
        atomic_write(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        fsync_tree(tmp)
        _swap_into_place(tmp, out_dir)
        fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _copy_file(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    os.chmod(target, FILE_MODE)


def _copy_report(source: Path, target: Path) -> None:
    """The report's regular files (symlinks followed, as plain copies) in 0755 directories."""
    for dirpath, _dirnames, filenames in os.walk(source):
        folder = target / Path(dirpath).relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, DIR_MODE)
        for name in filenames:
            if Path(dirpath, name).is_file():
                _copy_file(Path(dirpath, name), folder / name)


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

"""Writing a bundle directory atomically: the converter's and ``bundle create``'s last step."""

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

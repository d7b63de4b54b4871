"""Running Coral's ``edgetpu_compiler`` and reading what it says.

The compiler is a closed-source x86-64 Linux binary from Coral's apt
repository. It writes ``<stem>_edgetpu.tflite`` (and ``<stem>_edgetpu.log``)
into ``--out_dir`` and prints a summary we parse::

    Edge TPU Compiler version 16.0.384591198
    ...
    On-chip memory used for caching model parameters: 1.92MiB
    On-chip memory remaining for caching model parameters: 1.75KiB
    Off-chip memory used for streaming uncached model parameters: 3.23MiB
    Number of Edge TPU subgraphs: 1
    Total number of operations: 136
    ...
    Number of operations that will run on Edge TPU: 135
    Number of operations that will run on CPU: 1

    Operator                       Count      Status
    RESHAPE                        15         Mapped to Edge TPU
    ...

When every op is mapped the two "Number of operations that will run" lines
are absent, so the per-operator table (``-s``) is the primary source.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edgeclass.device.errors import EdgeclassError
from edgeclass.device.pipeline.interpreter import has_edgetpu_op

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
MAPPED = "Mapped to Edge TPU"
INSTALL_HINT = (
    "it exists only for x86-64 Debian/Ubuntu: add Coral's apt repository and "
    "'sudo apt-get install edgetpu-compiler' (see coral.ai/docs/edgetpu/compiler), "
    "or pass --edgetpu-compiler PATH"
)
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_MEMORY = re.compile(r"^(On-chip memory used|On-chip memory remaining|Off-chip memory used)[^:]*:\s*([\d.]+)\s*(B|KiB|MiB|GiB)\s*$")
_COUNT = re.compile(r"^(Number of Edge TPU subgraphs|Total number of operations|Number of operations that will run on Edge TPU"
                    r"|Number of operations that will run on CPU):\s*(\d+)\s*$")
_OP_ROW = re.compile(r"^([A-Z][A-Z0-9_]*|[a-z][a-z0-9-]*)\s{2,}(\d+)\s{2,}(\S.*?)\s*$")


class EdgeTPUCompilerError(EdgeclassError):
    """The Edge TPU compiler is missing or refused the model."""


@dataclass(frozen=True)
class CompileReport:
    """What the compiler said about one model."""

    version: str | None = None
    ops_total: int | None = None
    ops_mapped: int | None = None
    subgraphs: int | None = None
    on_chip_bytes: int | None = None
    on_chip_remaining_bytes: int | None = None
    off_chip_bytes: int | None = None
    operators: tuple[tuple[str, int, str], ...] = field(default_factory=tuple)  # (op, count, status)

    @property
    def fully_mapped(self) -> bool:
        return self.ops_total is not None and self.ops_mapped == self.ops_total

    def to_json(self) -> dict:
        """The manifest's ``edgetpu.compiler`` section."""
        return {
            "version": self.version,
            "ops_mapped": self.ops_mapped,
            "ops_total": self.ops_total,
            "subgraphs": self.subgraphs,
            "on_chip_memory_bytes": self.on_chip_bytes,
            "on_chip_memory_remaining_bytes": self.on_chip_remaining_bytes,
            "off_chip_memory_bytes": self.off_chip_bytes,
            "operators": [{"op": op, "count": n, "status": status} for op, n, status in self.operators],
        }

    def summary(self) -> str:
        mem = ""
        if self.on_chip_bytes is not None:
            mem = f", {_human(self.on_chip_bytes)} on-chip, {_human(self.off_chip_bytes or 0)} off-chip"
        return f"Edge TPU compiler {self.version or '?'}: {self.ops_mapped} of {self.ops_total} ops mapped{mem}"


def parse_compiler_log(text: str) -> CompileReport:
    """Read the compiler's stdout into a :class:`CompileReport` (missing lines stay None)."""
    values: dict = {}
    operators: list[tuple[str, int, str]] = []
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Edge TPU Compiler version"):
            values["version"] = line.rsplit(" ", 1)[-1]
        elif m := _MEMORY.match(line):
            key = {"On-chip memory used": "on_chip_bytes", "On-chip memory remaining": "on_chip_remaining_bytes",
                   "Off-chip memory used": "off_chip_bytes"}[m.group(1)]
            values[key] = round(float(m.group(2)) * _UNITS[m.group(3)])
        elif m := _COUNT.match(line):
            key = {"Number of Edge TPU subgraphs": "subgraphs", "Total number of operations": "ops_total",
                   "Number of operations that will run on Edge TPU": "ops_mapped",
                   "Number of operations that will run on CPU": "ops_cpu"}[m.group(1)]
            values[key] = int(m.group(2))
        elif line.startswith("Operator") and "Status" in line:
            in_table = True
        elif in_table and (m := _OP_ROW.match(line)):
            operators.append((m.group(1), int(m.group(2)), m.group(3)))
    ops_cpu = values.pop("ops_cpu", None)
    if operators:
        # The table is the most complete account; it exists with -s.
        values["ops_mapped"] = sum(n for _, n, status in operators if status == MAPPED)
        values.setdefault("ops_total", sum(n for _, n, _ in operators))
    elif "ops_mapped" not in values and values.get("ops_total") is not None:
        # Without a table, the compiler prints the CPU/TPU split only when some
        # ops stay on the CPU; its absence after a successful compile means all mapped.
        values["ops_mapped"] = values["ops_total"] - (ops_cpu or 0)
    return CompileReport(operators=tuple(operators), **values)


def find_compiler(explicit: str | Path | None = None) -> Path:
    """The compiler executable: ``explicit`` if given, else ``edgetpu_compiler`` on PATH."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise EdgeTPUCompilerError(f"{path}: no such Edge TPU compiler executable")
        if not os.access(path, os.X_OK):
            raise EdgeTPUCompilerError(f"{path}: is not executable (chmod +x it)")
        return path
    found = shutil.which(COMPILER)
    if found is None:
        raise EdgeTPUCompilerError(f"{COMPILER} not found on PATH: {INSTALL_HINT}")
    return Path(found)


def compile_for_edgetpu(model: Path, out_dir: Path, compiler: Path, timeout_s: float = 600.0) -> tuple[Path, CompileReport, str]:
    """Compile ``model`` into ``out_dir``; return (compiled model, report, full log text).

    Raises :class:`EdgeTPUCompilerError` with the compiler's own last words when
    it fails, and when its output file lacks the Edge TPU custom op (nothing mapped).
    """
    model, out_dir = Path(model), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # -s: print the per-operator table; -o: where the outputs go.
    cmd = [str(compiler), "-s", "-o", str(out_dir), str(model)]
    log.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise EdgeTPUCompilerError(f"{compiler}: did not finish compiling {model} within {timeout_s:.0f} s") from None
    except OSError as exc:
        raise EdgeTPUCompilerError(f"{compiler}: cannot run ({exc.strerror}); {INSTALL_HINT}") from None
    text = proc.stdout + (("\n" + proc.stderr) if proc.stderr else "")
    if proc.returncode != 0:
        raise EdgeTPUCompilerError(f"{compiler} failed on {model} (exit {proc.returncode}): {_last_words(text)}")
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    if not compiled.is_file():
        raise EdgeTPUCompilerError(f"{compiler} reported success but wrote no {compiled.name} in {out_dir}")
    if not has_edgetpu_op(compiled):
        raise EdgeTPUCompilerError(f"{compiled}: the compiler mapped no op to the Edge TPU ({_last_words(text)})")
    report = parse_compiler_log(text)
    log.info("%s", report.summary())
    return compiled, report, text


def _last_words(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-3:]) if lines else "no output"


def _human(n: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.2f}{unit}"
    return f"{n}B"

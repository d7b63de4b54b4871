"""What machine a measurement was taken on: architecture, CPU model, board, OS, Python.

An accuracy figure belongs to the machine that measured it: the same int8
model gives slightly different answers on x86-64 and on a Pi's Arm cores
(their interpreter kernels round differently), so ``convert`` and ``bundle
evaluate`` both record :func:`describe_machine` next to their figures.

Under qemu-user emulation ``/proc/cpuinfo`` is the host's, so an aarch64
process that finds an x86 CPU there is reported as ``emulated`` (with the
``QEMU_CPU`` it was given): its accuracy is the Arm kernels', its timings
are nobody's.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# CPU part numbers of Arm Ltd. cores (implementer 0x41) found in single-board computers.
ARM_PARTS = {
    0xD03: "Cortex-A53",  # Raspberry Pi 3, Pi Zero 2 W
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",  # Raspberry Pi 4, Pi 400, CM4
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",  # Raspberry Pi 5, CM5
    0xD0D: "Cortex-A77",
    0xD41: "Cortex-A78",
}
_X86 = {"x86_64", "amd64", "i386", "i686"}
_ARM = {"aarch64", "arm64", "armv7l", "armv8l"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model(cpuinfo: str) -> tuple[str | None, str | None]:
    """``(model, architecture family)`` from the text of ``/proc/cpuinfo``: ("AMD EPYC", "x86"), ("Cortex-A72", "arm")."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    family = "x86" if "vendor_id" in fields or "sse" in fields.get("flags", "").split() else None
    if family is None and ("CPU implementer" in fields or "Features" in fields):
        family = "arm"
    if fields.get("model name"):
        return fields["model name"], family
    if family == "arm":
        try:
            implementer, part = int(fields.get("CPU implementer", ""), 16), int(fields.get("CPU part", ""), 16)
        except ValueError:
            return None, family
        if implementer == 0x41 and part in ARM_PARTS:
            return ARM_PARTS[part], family
        return f"implementer {implementer:#x} part {part:#x}", family
    return None, family


def _os_name() -> str | None:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def describe_machine() -> dict:
    """This machine, as recorded next to a measurement (see module docstring)."""
    machine = platform.machine()
    model, family = cpu_model(_read("/proc/cpuinfo"))
    board = _read("/proc/device-tree/model").rstrip("\x00\n") or None
    emulated = (machine in _ARM and family == "x86") or (machine in _X86 and family == "arm")
    out = {
        "machine": machine,
        "cpu": model,
        "board": board,
        "cores": os.cpu_count(),
        "os": _os_name(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "emulated": emulated,
    }
    if emulated:
        out["emulated_cpu"] = os.environ.get("QEMU_CPU") or "qemu default"
        out["cpu"] = f"{out['emulated_cpu']} emulated by qemu on {model}"
    return out


def machine_summary(info: dict) -> str:
    """One line: ``aarch64, Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4), Debian GNU/Linux 12, CPython 3.11.2``."""
    cpu = info.get("cpu") or "unknown CPU"
    board = f" ({info['board']})" if info.get("board") else ""
    rest = ", ".join(v for v in (info.get("os"), info.get("python")) if v)
    return f"{info.get('machine')}, {cpu}{board}" + (f", {rest}" if rest else "")

"""Which machine a measurement ran on: this machine for real, a Pi's /proc/cpuinfo from its documented format.

No Raspberry Pi exists here, so the Pi cases parse /proc/cpuinfo text in the
format a Pi 4 and a Pi 5 print (64-bit Raspberry Pi OS: per-core blocks with
"CPU implementer"/"CPU part", then "Model"); this machine's own file is read as is.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from edgeclass.device.pipeline.machine import cpu_model, describe_machine, machine_summary

PI4 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Revision\t: c03114
Serial\t\t: 10000000abcdef01
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
PI5 = PI4.replace("0xd08", "0xd0b").replace("Raspberry Pi 4 Model B Rev 1.4", "Raspberry Pi 5 Model B Rev 1.0")


def test_pi_cpus_are_named_from_their_part_numbers():
    assert cpu_model(PI4) == ("Cortex-A72", "arm")
    assert cpu_model(PI5) == ("Cortex-A76", "arm")
    assert cpu_model(PI4.replace("0xd08", "0xc0f")) == ("implementer 0x41 part 0xc0f", "arm")


def test_this_machine_is_described_from_its_own_files():
    info = describe_machine()
    text = Path("/proc/cpuinfo").read_text()
    assert info["machine"] == platform.machine() and info["cores"] == os.cpu_count()
    assert info["python"] == f"{platform.python_implementation()} {platform.python_version()}"
    assert info["emulated"] is False  # this test process runs natively
    if platform.machine() == "x86_64":
        model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        assert info["cpu"] == model
        assert machine_summary(info).startswith(f"x86_64, {model}")


def test_an_x86_cpuinfo_seen_by_arm64_code_means_emulation(monkeypatch):
    """qemu-user passes the host's /proc/cpuinfo through: arm64 code finding an x86 CPU is emulated."""
    from edgeclass.device.pipeline import machine

    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2\n"
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(machine, "_read", lambda path: x86 if path == "/proc/cpuinfo" else "")
    monkeypatch.setenv("QEMU_CPU", "cortex-a76")
    info = machine.describe_machine()
    assert info["emulated"] is True and info["emulated_cpu"] == "cortex-a76"
    assert info["cpu"] == "cortex-a76 emulated by qemu on AMD EPYC"

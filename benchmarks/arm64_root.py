"""Debian arm64 roots under qemu-user emulation: build once per machine, then run edgeclass inside them.

Used by ``benchmarks/arm64.py`` (the arm64 proof that ``.ci/run`` runs). Stdlib only.

A root is ``debootstrap --arch=arm64 --variant=minbase`` of a Debian suite
(bookworm is the base of Raspberry Pi OS 12, trixie of Raspberry Pi OS 13),
cached under ``/var/cache/edgeclass-ci/arm64/<suite>-<key>/`` where ``key`` is
a hash of everything that went into it; the device install is a venv at
``/opt/edgeclass/venv`` inside it, rebuilt when ``pyproject.toml`` changes
and refreshed from the checkout (``--no-deps``) on every run.

What emulation needs, and why each step is here:

- binfmt_misc mounted and Debian's ``qemu-aarch64`` entry registered: the
  kernel then hands every aarch64 ELF to qemu-aarch64 (its ``F`` flag opens
  the emulator at registration, so it works inside a chroot);
- no host ``/sys`` inside the root: LiteRT's cpuinfo library reads the CPU
  topology from it, finds x86 and crashes. A small fake
  ``/sys/devices/system/cpu/{possible,present,online}`` with the host's CPU
  count keeps cpuinfo and glibc's CPU count working;
- pip inside the root uses the host's CA bundle and the host's http(s)
  package indexes (file:// indexes of the host do not exist in the root);
- ``QEMU_CPU`` picks the emulated core: ``cortex-a72`` is a Raspberry Pi 4's,
  ``cortex-a76`` a Pi 5's.

Every command runs in a private mount namespace (``unshare --mount``) where
``/proc`` is mounted into the root, so nothing stays mounted when it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("EDGECLASS_ARM64_CACHE", "/var/cache/edgeclass-ci/arm64"))
MIRROR = os.environ.get("EDGECLASS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITES = {"bookworm": "3.11", "trixie": "3.13"}  # suite -> its python3
PACKAGES = ("python3", "python3-venv", "ca-certificates")
ROOT_RECIPE = 1  # bump when the way a root is built changes
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
VENV = "/opt/edgeclass/venv"
SRC = "/opt/edgeclass/src"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What of the checkout a wheel build needs (package-dir maps these folders).
SOURCE_ITEMS = ("pyproject.toml", "README.md", "device", "train", "convert", "workflow", "systemd")


class Unavailable(Exception):
    """Emulation cannot run on this machine; the message says what is missing."""


def prepare_emulation() -> None:
    """Mount binfmt_misc and register qemu-aarch64 when needed; :class:`Unavailable` says why it cannot."""
    if os.geteuid() != 0:
        raise Unavailable("needs root (debootstrap, chroot and binfmt_misc registration)")
    for tool in ("debootstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} not found (Debian: apt-get install -y debootstrap qemu-user-static)")
    if not BINFMT_CONF.is_file():
        raise Unavailable(f"{BINFMT_CONF} not found (Debian: apt-get install -y qemu-user-static)")
    if not (BINFMT_DIR / "register").exists():
        result = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], capture_output=True, text=True)
        if result.returncode != 0:
            raise Unavailable(f"cannot mount binfmt_misc on {BINFMT_DIR}: {result.stderr.strip() or result.returncode}")
    entry = BINFMT_DIR / "qemu-aarch64"
    if not entry.exists():
        try:
            (BINFMT_DIR / "register").write_text(BINFMT_CONF.read_text().strip() + "\n")
        except OSError as exc:
            raise Unavailable(f"cannot register {BINFMT_CONF} in {BINFMT_DIR}/register: {exc}") from None
    if "enabled" not in entry.read_text().splitlines()[0]:
        raise Unavailable(f"{entry} is registered but disabled")


def _run(argv: list[str], *, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """subprocess.run in a session of its own, so a timeout ends every process it started (qemu children too)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"{' '.join(argv[:8])} ... did not finish in {timeout:.0f} s") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked(name: str):
    """One builder per machine at a time (two CI runs must not debootstrap into one directory)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@dataclass
class Root:
    """One cached arm64 root of a Debian suite."""

    suite: str
    path: Path
    built_seconds: float | None = None  # None: taken from the cache
    venv_seconds: float | None = None  # full install; None: the cached venv was reused
    refresh_seconds: float | None = None  # --no-deps reinstall of the checkout

    def run(self, argv: list[str], *, qemu_cpu: str | None = None, env: dict | None = None, timeout: float = 900,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the root (a private mount namespace with /proc mounted); capture text output."""
        script = 'mount -t proc proc "$1/proc" && shift && exec chroot "$@"'
        inner = {"PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                 "TMPDIR": "/tmp", **(env or {})}
        outer = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        if qemu_cpu:  # read by every qemu-aarch64 the kernel starts, so in both environments
            inner["QEMU_CPU"] = outer["QEMU_CPU"] = qemu_cpu
        argv = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in inner.items()), *argv]
        result = _run(["unshare", "--mount", "--fork", "sh", "-c", script, "sh", str(self.path), str(self.path), *argv],
                      env=outer, timeout=timeout)
        if check and result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
            raise RuntimeError(f"{self.suite}: {' '.join(argv)} exited {result.returncode}:\n" + "\n".join(tail))
        return result

    def host_path(self, inside: str) -> Path:
        """Where the root's absolute path ``inside`` is on the host."""
        return self.path / inside.lstrip("/")


def ensure_root(suite: str, log=print) -> Root:
    """The cached root of ``suite``, built with debootstrap first when missing."""
    if suite not in SUITES:
        raise ValueError(f"suite {suite!r} is not one of {', '.join(SUITES)}")
    key = _digest(ROOT_RECIPE, suite, "arm64", "minbase", PACKAGES, MIRROR)
    path = CACHE / f"{suite}-{key}"
    with _locked(suite):
        if (path / ".edgeclass-root-complete").is_file():
            return Root(suite, path)
        for stale in CACHE.glob(f"{suite}-*"):  # older recipes and half-built roots
            _remove(stale)
        log(f"[{suite}] debootstrap --arch=arm64 --variant=minbase {suite} (first run on this machine)")
        start = time.monotonic()
        try:
            result = _run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                           suite, str(path), MIRROR], timeout=3600)
        except RuntimeError:
            _remove(path)
            raise
        if result.returncode != 0:
            log_file = path / "debootstrap" / "debootstrap.log"
            detail = log_file.read_text()[-2000:] if log_file.is_file() else (result.stderr or result.stdout)[-2000:]
            _remove(path)
            raise RuntimeError(f"debootstrap {suite} failed (exit {result.returncode}):\n{detail}")
        _fake_sys(path)
        (path / ".edgeclass-root-complete").write_text(key + "\n")
        return Root(suite, path, built_seconds=time.monotonic() - start)


def _remove(path: Path) -> None:
    """Delete a (half-built) root; first unmount what an interrupted debootstrap left mounted in it (its /proc)."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/mounts") as fh:
        points = [line.split()[1] for line in fh if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def _fake_sys(path: Path) -> None:
    """The few /sys files cpuinfo and glibc read, with the host's CPU numbering (see module docstring)."""
    cpu = path / "sys/devices/system/cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        host = Path("/sys/devices/system/cpu") / name
        (cpu / name).write_text(host.read_text() if host.is_file() else f"0-{(os.cpu_count() or 1) - 1}\n")


def _pip_conf() -> str:
    """The root's /etc/pip.conf: the host's CA bundle and its http(s) indexes (see module docstring)."""
    lines = ["[global]", "cert = /etc/edgeclass-ci/ca-certificates.crt", "disable-pip-version-check = true",
             "default-timeout = 180"]
    result = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True)
    wanted = {"index-url": [], "extra-index-url": [], "trusted-host": []}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in wanted:
            values = value.strip().strip("'\"").split()
            wanted[name] += [v for v in values if not v.startswith("file:")]
    for name, values in wanted.items():
        if values:
            lines.append(f"{name} = {' '.join(dict.fromkeys(values))}")
    return "\n".join(lines) + "\n"


def _network_files(root: Root) -> None:
    """DNS, the CA bundle and pip's settings copied from the host before pip runs."""
    etc = root.host_path("/etc")
    shutil.copyfile("/etc/resolv.conf", etc / "resolv.conf", follow_symlinks=True)
    (etc / "edgeclass-ci").mkdir(exist_ok=True)
    shutil.copyfile(CA_BUNDLE, etc / "edgeclass-ci" / "ca-certificates.crt")
    (etc / "pip.conf").write_text(_pip_conf())


def copy_checkout(root: Root, checkout: Path) -> None:
    """Replace the root's /opt/edgeclass/src with the checkout's package sources."""
    src = root.host_path(SRC)
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for item in SOURCE_ITEMS:
        source = checkout / item
        if source.is_dir():
            shutil.copytree(source, src / item, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, src / item)


def ensure_venv(root: Root, checkout: Path, log=print) -> None:
    """``pip install '<checkout>[device]'`` into the root's venv (full when pyproject.toml changed, else --no-deps)."""
    with _locked(f"{root.suite}-venv"):  # two runs on one machine must not pip into one venv at once
        copy_checkout(root, checkout)
        _network_files(root)
        key = _digest((checkout / "pyproject.toml").read_text())
        marker = root.host_path(VENV) / ".edgeclass-deps"
        if not (marker.is_file() and marker.read_text().strip() == key):
            start = time.monotonic()
            if not root.host_path(f"{VENV}/bin/pip").exists():  # no venv yet, or one whose ensurepip was cut short
                log(f"[{root.suite}] python3 -m venv --clear {VENV} (first run)")
                # ensurepip installs and byte-compiles pip emulated: minutes on a busy machine.
                root.run(["python3", "-m", "venv", "--clear", VENV], timeout=3600)
            # Into the existing venv when only the dependencies changed: pip adds what is new.
            # setuptools and wheel let later runs reinstall the checkout without build isolation.
            log(f"[{root.suite}] pip install '{SRC}[device]' (dependencies changed or first run)")
            root.run([f"{VENV}/bin/pip", "install", "-q", f"{SRC}[device]", "setuptools>=77", "wheel"], timeout=3600)
            marker.write_text(key + "\n")
            root.venv_seconds = time.monotonic() - start
            return
        start = time.monotonic()
        root.run([f"{VENV}/bin/pip", "install", "-q", "--no-deps", "--no-build-isolation", "--force-reinstall", SRC], timeout=900)
        root.refresh_seconds = time.monotonic() - start

"""``edgeclass setup-pi``: put this workstation's edgeclass on a Pi over ssh and install the service.

edgeclass is installed on the Pi from a wheel of the workstation's own copy,
so both ends run the same code (and ``deploy`` can compare their versions):

1. build the wheel here (``pip wheel`` of the checkout edgeclass runs from,
   or ``--wheel FILE``);
2. ``mktemp -d`` on the Pi and ``scp`` the wheel into it;
3. apt: ``python3-venv`` when missing, ``python3-picamera2`` where the OS has
   it (Raspberry Pi OS does, plain Debian does not: that is said, and the
   set-up goes on, since USB cameras, streams and files need no picamera2);
4. ``python3 -m venv --system-site-packages`` (so the venv sees apt's
   picamera2), unless the venv is there already;
5. ``pip install WHEEL[device]`` into it, then the wheel alone again with
   ``--force-reinstall``, so a second run replaces the code even when the
   version number did not change, and link ``/usr/local/bin/edgeclass`` to it;
6. ``edgeclass service install`` with the venv's edgeclass, and ``systemctl
   try-restart`` so a running service picks the new code up;
7. remove the upload and print the version now installed.

Every remote command goes through ``sudo -n`` (the ssh user needs
passwordless sudo, as for ``deploy``) over one shared ssh connection.
"""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import EdgeclassError
from .ssh import DeployError, Session, SshTarget, last_line

UPLOAD = "/tmp/edgeclass-setup.XXXXXX"
LINK = "/usr/local/bin/edgeclass"
APT_REQUIRED = ("python3-venv",)
APT_WHERE_AVAILABLE = ("python3-picamera2",)  # Raspberry Pi OS's apt has it, Debian's does not


@dataclass(frozen=True)
class SetupOptions:
    """Where edgeclass goes on the Pi."""

    venv: str = "/opt/edgeclass/venv"
    service: str = "edgeclass"
    wheel: Path | None = None  # a wheel to install instead of building one from this checkout

    @property
    def pip(self) -> str:
        return f"{self.venv}/bin/pip"

    @property
    def edgeclass(self) -> str:
        return f"{self.venv}/bin/edgeclass"


def source_tree() -> Path:
    """The checkout this edgeclass runs from (editable) or was installed from (``pip install .``).

    A clear error when it came from a wheel or an index instead: there is no
    source to build from then.
    """
    here = Path(__file__).resolve().parents[2]  # device/fleet/setup.py -> the project folder
    for candidate in (here, _installed_from()):
        if candidate is not None and _is_edgeclass_project(candidate):
            return candidate
    raise EdgeclassError(f"this edgeclass ({here}) was installed from a wheel or a package index, not from a checkout, so there is "
                         "nothing to build a wheel from: pass the wheel with --wheel FILE, or install edgeclass here "
                         "from its checkout (pip install .)")


def _is_edgeclass_project(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    return pyproject.is_file() and 'name = "edgeclass"' in pyproject.read_text(encoding="utf-8")


def _installed_from() -> Path | None:
    """The local folder ``pip install`` took edgeclass from (PEP 610 direct_url.json), if it was one."""
    import json
    from importlib.metadata import distributions
    from urllib.parse import unquote, urlparse

    # The metadata beside the imported package: an edgeclass.egg-info in the current folder must not answer.
    site = Path(__file__).resolve().parents[3]
    found = list(distributions(name="edgeclass", path=[str(site)]))
    if not found:
        return None
    text = found[0].read_text("direct_url.json")
    try:
        origin = json.loads(text or "{}")
    except json.JSONDecodeError:
        return None
    url = urlparse(origin.get("url", ""))
    if url.scheme != "file" or "dir_info" not in origin:
        return None
    return Path(unquote(url.path))


def wheel_command(source: Path, out_dir: Path) -> list[str]:
    """``pip wheel`` of the checkout, without dependencies; offline when this venv can build it itself."""
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out_dir)]
    if _can_build_offline():
        argv.append("--no-build-isolation")
    return [*argv, str(source)]


def _can_build_offline() -> bool:
    """setuptools >= 77 (for the SPDX license field) and wheel here: no need to fetch them for an isolated build."""
    if importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("wheel") is None:
        return False
    from importlib.metadata import version

    try:
        return int(version("setuptools").split(".")[0]) >= 77
    except ValueError:
        return False


def build_wheel(out_dir: Path) -> Path:
    """Build the workstation's edgeclass into ``out_dir``; the wheel's path."""
    source = source_tree()
    result = subprocess.run(wheel_command(source, out_dir), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wheels = sorted(out_dir.glob("edgeclass-*.whl"))
    if result.returncode != 0 or not wheels:
        raise EdgeclassError(f"{source}: could not build a wheel of edgeclass (pip wheel exit {result.returncode}): "
                             f"{last_line(result)}")
    return wheels[-1]


@dataclass
class PiSetup:
    """One ``setup-pi`` run: :meth:`run`; ``dry_run`` prints the steps instead."""

    target: SshTarget
    options: SetupOptions = field(default_factory=SetupOptions)
    echo: Callable[[str], None] = print
    dry_run: bool = False

    def run(self) -> str:
        """Install or upgrade edgeclass and the service on the Pi; the version now installed there."""
        if self.options.wheel is not None and not self.options.wheel.is_file():
            raise EdgeclassError(f"{self.options.wheel}: no such wheel file (--wheel)")
        if self.dry_run:
            return self._plan()
        with tempfile.TemporaryDirectory(prefix="edgeclass-wheel-") as out:
            wheel = self.options.wheel
            if wheel is None:
                self.echo(f"build     a wheel of edgeclass {__version__} from {source_tree()}")
                wheel = build_wheel(Path(out))
            self.echo(f"wheel     {wheel.name}")
            with Session(self.target) as session:
                return self._install(session, wheel)

    # -- the steps ---------------------------------------------------------------------

    def _install(self, session: Session, wheel: Path) -> str:
        opts, host = self.options, self.target.host
        tmp = session.run(f"mktemp -d {UPLOAD}", "create a temporary directory").stdout.strip().splitlines()[-1]
        try:
            session.copy(wheel, tmp, f"copy {wheel.name} to {host}:{tmp}")
            staged = f"{tmp}/{wheel.name}"
            self._apt(session)
            self._venv(session)
            self._step(session, f"install {wheel.name} with its device extra into {opts.venv}",
                       self._pip_install(staged))
            self._step(session, "replace edgeclass's own files (same version, newer code)", self._pip_replace(staged))
            self._step(session, f"link {LINK} to {opts.edgeclass}", self._link())
            result = self._step(session, "install the service", f"sudo -n {shlex.quote(opts.edgeclass)} service install")
            for line in result.stdout.strip().splitlines():
                self.echo(f"device    {line}")
            self._step(session, f"restart {opts.service} if it runs (the new code)", self._try_restart())
        finally:
            try:
                session.run(f"rm -rf -- {shlex.quote(tmp)}", "remove the upload", check=False)
            except DeployError:
                pass
        installed = self._step(session, "read the installed version", f"{shlex.quote(opts.edgeclass)} --version")
        version = installed.stdout.strip().splitlines()[-1]
        self.echo(f"done      {host} has {version} in {opts.venv}; next: sudo systemctl start {opts.service}, "
                  f"then edgeclass deploy BUNDLE {host}")
        return version

    def _step(self, session: Session, text: str, command: str) -> subprocess.CompletedProcess:
        self.echo(f"step      {text}")
        return session.run(command, text)

    def _apt(self, session: Session) -> None:
        packages = APT_REQUIRED + APT_WHERE_AVAILABLE
        query = session.run(self._apt_query(packages), "ask dpkg which packages are installed", check=False)
        installed = {line.split()[0] for line in query.stdout.splitlines() if line.endswith(" installed")}
        missing = [p for p in packages if p not in installed]
        for package in packages:
            if package in installed:
                self.echo(f"apt       {package} is installed")
        if not missing:
            return
        self._step(session, "apt-get update (to find " + ", ".join(missing) + ")", "sudo -n apt-get update -qq")
        available = session.run(self._apt_available(missing), "ask apt which packages it has", check=False)
        known = set(available.stdout.split())
        wanted = [p for p in missing if p in known]
        for package in missing:
            if package not in known:
                if package in APT_REQUIRED:
                    raise DeployError(f"{self.target.host}: apt has no {package}; install Python's venv module "
                                      "there, then run setup-pi again")
                self.echo(f"apt       {package} is not in this system's apt sources (Raspberry Pi OS has it, plain "
                          "Debian does not): the picamera2 source will not work here; USB cameras (/dev/videoN), "
                          "streams and files do. Going on.")
        if wanted:
            self._step(session, "apt-get install " + " ".join(wanted),
                       "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
                       + " ".join(wanted))

    @staticmethod
    def _apt_query(packages) -> str:
        # "python3-venv install ok installed" per package; nothing for one dpkg never heard of.
        return "dpkg-query -W -f='${Package} ${Status}\\n' " + " ".join(packages) + " 2>/dev/null; true"

    @staticmethod
    def _apt_available(packages) -> str:
        # The names apt has a candidate for, one a line.
        return " ; ".join(f"apt-cache show {p} >/dev/null 2>&1 && echo {p}" for p in packages) + " ; true"

    def _venv(self, session: Session) -> None:
        venv = shlex.quote(self.options.venv)
        if session.run(f"test -x {venv}/bin/python", "look for the venv", check=False).returncode == 0:
            self.echo(f"venv      {self.options.venv} exists")
            return
        self._step(session, f"create {self.options.venv} (--system-site-packages: it sees apt's picamera2)",
                   self._venv_command())

    def _venv_command(self) -> str:
        venv = shlex.quote(self.options.venv)
        return f"sudo -n mkdir -p {shlex.quote(str(Path(self.options.venv).parent))} && " \
               f"sudo -n python3 -m venv --system-site-packages {venv}"

    def _pip_install(self, staged: str) -> str:
        return (f"sudo -n {shlex.quote(self.options.pip)} install --quiet --root-user-action=ignore "
                f"{shlex.quote(staged + '[device]')}")

    def _pip_replace(self, staged: str) -> str:
        return (f"sudo -n {shlex.quote(self.options.pip)} install --quiet --root-user-action=ignore "
                f"--force-reinstall --no-deps {shlex.quote(staged)}")

    def _link(self) -> str:
        # `edgeclass` on the PATH for the Pi's users and for sudo; a file someone else put there is left alone.
        return (f'if [ ! -e {LINK} ] || [ -L {LINK} ]; then sudo -n ln -sf {shlex.quote(self.options.edgeclass)} {LINK}; '
                f'else echo "{LINK} is not a link, left as it is" >&2; fi')

    def _try_restart(self) -> str:
        return f"sudo -n systemctl try-restart {shlex.quote(self.options.service)}"

    # -- the plan ------------------------------------------------------------------------

    def _plan(self) -> str:
        opts, t = self.options, self.target
        wheel_name = "edgeclass-VERSION-py3-none-any.whl"
        staged = f"{UPLOAD}/{wheel_name}"
        if opts.wheel is not None:
            build = ("use the given wheel", [str(opts.wheel)])
        else:
            build = ("build a wheel of this checkout", wheel_command(source_tree(), Path("TMPDIR")))
        packages = APT_REQUIRED + APT_WHERE_AVAILABLE
        steps = [
            build,
            ("create a temporary directory", t.ssh(f"mktemp -d {UPLOAD}")),
            ("copy the wheel", t.scp(Path(wheel_name), UPLOAD)),
            ("ask dpkg which packages are installed", t.ssh(self._apt_query(packages))),
            ("if any is missing: apt-get update", t.ssh("sudo -n apt-get update -qq")),
            ("install those apt has (python3-picamera2 only where the OS has it)",
             t.ssh("sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
                   + " ".join(packages))),
            (f"unless {opts.venv} exists, create it", t.ssh(self._venv_command())),
            ("install the wheel with its device extra", t.ssh(self._pip_install(staged))),
            ("replace edgeclass's own files", t.ssh(self._pip_replace(staged))),
            (f"link {LINK} to {opts.edgeclass}", t.ssh(self._link())),
            ("install the service", t.ssh(f"sudo -n {shlex.quote(opts.edgeclass)} service install")),
            (f"restart {opts.service} if it runs", t.ssh(self._try_restart())),
            ("remove the upload", t.ssh(f"rm -rf -- {UPLOAD}")),
            ("read the installed version", t.ssh(f"{shlex.quote(opts.edgeclass)} --version")),
        ]
        for text, argv in steps:
            self.echo(f"would: {text}: {shlex.join(argv)}")
        return "dry-run"


def version_mismatch(session: Session, remote_edgeclass: str) -> str | None:
    """None when the device's edgeclass has this workstation's version; else a sentence naming both."""
    result = session.run(f"{shlex.quote(remote_edgeclass)} --version", "read the device's edgeclass version",
                         check=False, quiet=True)
    words = result.stdout.split()
    remote = words[-1] if result.returncode == 0 and words else None
    if remote == __version__:
        return None
    there = f"edgeclass {remote}" if remote else f"no working {remote_edgeclass} ({last_line(result)})"
    return (f"the device has {there}, this workstation edgeclass {__version__}: "
            f"'edgeclass setup-pi {session.target.host}' installs this version there")

"""The README's Raspberry Pi guide, run step for step against a bare rehearsal Pi with a real systemd.

Every command of the guide is run as written (only ``pi@raspberrypi.local``
becomes the container's ssh alias): workstation commands here, through the
harness's ssh config; Pi commands over ssh as user ``pi``. The four that need
camera hardware are listed and not run. Between steps the harness does only
what a user does by other means: copies a photo, makes a video file the
camera with the guide's ``[source]`` snippet, and damages a release's model
the way a bad SD card would.

Each step is taken with :meth:`Guide.run` naming the README line it expects
next, so a guide that changes without this test (or the reverse) fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgeclass.device import __version__

from .conftest import REHEARSAL_VIDEO, put_camera_video
from .container import REPO, PiContainer
from .guide import README_HOST, guide_commands, rehearsal_source

HARDWARE = "needs a camera (no camera can exist in the rehearsal; the video file stands in for it in the service)"
# The accuracy steps need a training run's photos and split.json; they run against a real sshd "Pi" in
# tests/device/test_evaluate.py and tests/device/test_deploy.py::test_verify_accuracy_measures_on_the_device_and_records_both.
TRAINING_RUN = "needs a training run (runs/flowers) and its photos; bundle evaluate and --verify-accuracy have their own tests"


class Guide:
    """Walks the guide's commands in README order; each step must be the next one."""

    def __init__(self, pi: PiContainer, workdir: Path) -> None:
        self.pi, self.workdir = pi, workdir
        self.commands = guide_commands()
        self.position = 0
        self.env = pi.env()
        self.log: list[str] = []

    def _take(self, command: str) -> str:
        assert self.position < len(self.commands), f"the guide has no more commands, the test expected {command!r}"
        assert self.commands[self.position] == command, (
            f"README's Pi guide step {self.position + 1} is {self.commands[self.position]!r}, the rehearsal expected "
            f"{command!r}: change the README or this test so they say the same")
        self.position += 1
        return command.replace(README_HOST, self.pi.host)

    def run(self, command: str, *, where: str, ok: bool = True, cwd: Path | None = None, timeout: float = 900,
            again: bool = False) -> subprocess.CompletedProcess:
        """Run the next guide command on the ``workstation`` or on the ``pi``; with ``again``, repeat the last one."""
        if again:
            assert self.commands[self.position - 1] == command
            line = command.replace(README_HOST, self.pi.host)
        else:
            line = self._take(command)
        started = time.monotonic()
        if where == "workstation":
            result = subprocess.run(line, shell=True, cwd=cwd or self.workdir, env=self.env, capture_output=True,
                                    text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        else:
            result = self.pi.ssh(line, check=False, timeout=timeout)
        self.log.append(f"[{where}] $ {line}  -> exit {result.returncode} in {time.monotonic() - started:.1f} s")
        if ok:
            assert result.returncode == 0, (f"guide step {line!r} on the {where} exited {result.returncode}\n"
                                            f"stdout: {result.stdout[-4000:]}\nstderr: {result.stderr[-4000:]}")
        return result

    def follow(self, command: str, seconds: float) -> str:
        """A command that runs until interrupted (``journalctl -f``): its output after ``seconds``, then Ctrl-C."""
        line = self._take(command)
        proc = subprocess.Popen(["ssh", self.pi.host, line], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        time.sleep(seconds)
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        self.log.append(f"[pi] $ {line}  -> {len(out.splitlines())} lines in {seconds:g} s, then interrupted")
        return out

    def not_run(self, command: str, reason: str) -> None:
        self._take(command)
        self.log.append(f"[pi] $ {command}  -> not run: {reason}")

    def finished(self) -> None:
        assert self.position == len(self.commands), f"guide steps not run: {self.commands[self.position:]}"


def _state(pi: PiContainer) -> dict:
    out = pi.run(["cat", "/run/edgeclass/state.json"], check=False).stdout
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        return {}


def _releases(pi: PiContainer) -> dict:
    return json.loads(pi.run(["/opt/edgeclass/venv/bin/edgeclass", "bundle", "releases", "--root",
                              "/var/lib/edgeclass", "--json"]).stdout.strip().splitlines()[-1])


def _runs_on(pi: PiContainer, release: str, timeout: float = 60) -> dict:
    def on_it():
        state = _state(pi)
        return state if str(state.get("bundle_path", "")).rstrip("/") == release.rstrip("/") else None
    return pi.wait_for(f"the service running {release}", on_it, timeout=timeout)


def test_readme_pi_guide_verbatim(bare_pi, colour_bundle, camera_video, tmp_path):
    pi = bare_pi
    guide = Guide(pi, tmp_path)
    try:
        _walk_the_guide(guide, pi, colour_bundle, camera_video, tmp_path)
    finally:
        print("\n".join(["README Pi guide, as run:", *guide.log]))


def _walk_the_guide(guide: Guide, pi: PiContainer, colour_bundle: Path, camera_video: Path, tmp_path: Path):
    # -- edgeclass onto a bare Pi --------------------------------------------------------------
    assert pi.run(["test", "-e", "/opt/edgeclass"], check=False).returncode != 0, "the container is not bare"
    plan = guide.run("edgeclass setup-pi pi@raspberrypi.local --dry-run", where="workstation").stdout
    for expected in ("pip wheel", "scp", "apt-get install", "python3 -m venv --system-site-packages",
                     "[device]", "service install"):
        assert expected in plan, f"setup-pi --dry-run does not show {expected!r}:\n{plan}"
    assert pi.run(["test", "-e", "/opt/edgeclass"], check=False).returncode != 0, "--dry-run changed the Pi"

    setup = guide.run("edgeclass setup-pi pi@raspberrypi.local", where="workstation").stdout
    assert "python3-picamera2 is not in this system's apt sources" in setup  # plain Debian: said, and on it goes
    assert pi.run(["/opt/edgeclass/venv/bin/edgeclass", "--version"]).stdout.split() == ["edgeclass", __version__]
    assert "include-system-site-packages = true" in pi.run(["cat", "/opt/edgeclass/venv/pyvenv.cfg"]).stdout
    assert pi.run(["readlink", "/usr/local/bin/edgeclass"]).stdout.strip() == "/opt/edgeclass/venv/bin/edgeclass"
    assert pi.unit_property("UnitFileState") == "enabled"
    assert pi.run(["/opt/edgeclass/venv/bin/python", "-c", "import tensorflow"], check=False).returncode != 0, \
        "the device install pulled in TensorFlow"

    # -- the same by hand (over the set-up install: it must be harmless to repeat) --------------------
    guide.run("pip wheel --no-deps -w dist .", where="workstation", cwd=REPO)
    assert (REPO / "dist" / f"edgeclass-{__version__}-py3-none-any.whl").is_file(), \
        "the README names a wheel file that pip wheel did not make (version changed? update the README)"
    guide.run("scp dist/edgeclass-0.1.0-py3-none-any.whl pi@raspberrypi.local:", where="workstation", cwd=REPO)
    guide.run("sudo apt install -y python3-venv", where="pi")
    picamera = guide.run("sudo apt install -y python3-picamera2", where="pi", ok=False)
    assert picamera.returncode != 0 and "Unable to locate package python3-picamera2" in picamera.stderr, \
        "the README says python3-picamera2 is Raspberry Pi OS only; Debian's apt should not have it"
    guide.run("sudo python3 -m venv --system-site-packages /opt/edgeclass/venv", where="pi")
    guide.run("sudo /opt/edgeclass/venv/bin/pip install './edgeclass-0.1.0-py3-none-any.whl[device]'", where="pi")
    guide.run("sudo ln -sf /opt/edgeclass/venv/bin/edgeclass /usr/local/bin/edgeclass", where="pi")
    guide.run("sudo /opt/edgeclass/venv/bin/edgeclass service install", where="pi")

    # -- the camera check needs the camera ---------------------------------------------------------
    guide.not_run("rpicam-hello --list-cameras", HARDWARE)
    guide.not_run("v4l2-ctl --list-devices", HARDWARE)
    guide.not_run("edgeclass run --bundle flowers --source picamera2 --max-frames 30", HARDWARE)
    guide.not_run("edgeclass run --bundle flowers --source /dev/video0 --duration 10 --stats 2", HARDWARE)

    # -- classify files on the Pi --------------------------------------------------------------------
    from tests.device.conftest import colour_frame

    import cv2

    photos = tmp_path / "photos"
    (photos / "folder").mkdir(parents=True)
    cv2.imwrite(str(photos / "photo.jpg"), cv2.cvtColor(colour_frame("red"), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(photos / "folder" / "g.png"), cv2.cvtColor(colour_frame("green"), cv2.COLOR_RGB2BGR))
    (photos / "folder" / "notes.txt").write_text("not an image")
    shutil.copytree(colour_bundle, photos / "flowers")
    subprocess.run(["scp", "-r", "-q", f"{photos}/photo.jpg", f"{photos}/folder", f"{photos}/flowers",
                    f"{pi.host}:"], env=guide.env, check=True, timeout=120)
    predicted = guide.run("edgeclass predict --bundle flowers photo.jpg folder/ --json", where="pi").stdout
    answers = {Path(r["path"]).name: r["label"] for r in map(json.loads, predicted.strip().splitlines()) if "label" in r}
    assert answers == {"photo.jpg": "red", "g.png": "green"}, predicted
    guide.not_run("edgeclass bundle evaluate flowers photos/", TRAINING_RUN)
    guide.not_run("edgeclass bundle evaluate flowers photos/ --split-file runs/flowers/split.json --split test", TRAINING_RUN)

    # -- the service ---------------------------------------------------------------------------------
    unit_before = pi.run(["sha256sum", "/etc/systemd/system/edgeclass.service", "/etc/edgeclass/device.toml"]).stdout
    dry = guide.run("sudo /opt/edgeclass/venv/bin/edgeclass service install --dry-run", where="pi")
    assert dry.stdout.strip(), "service install --dry-run printed no steps"
    guide.run("sudo /opt/edgeclass/venv/bin/edgeclass service install", where="pi")
    assert pi.run(["sha256sum", "/etc/systemd/system/edgeclass.service",
                   "/etc/edgeclass/device.toml"]).stdout == unit_before, "a second service install changed the files"

    # No camera here: the guide's [source] snippet makes a video file the camera.
    put_camera_video(pi, camera_video, REHEARSAL_VIDEO)
    config = pi.run(["cat", "/etc/edgeclass/device.toml"]).stdout
    assert '\nsource = "/dev/video0"\n' in config and "\n[source]\n" in config
    config = config.replace('\nsource = "/dev/video0"\n', "\n").replace("\n[source]\n", "\n" + rehearsal_source(), 1)
    pi.run(["tee", "/etc/edgeclass/device.toml"], input=config)

    guide.run("sudo systemctl start edgeclass", where="pi")
    followed = guide.follow("journalctl -u edgeclass -f", seconds=4)
    assert "waiting for" in followed, f"with no bundle yet the journal should say what the service waits for:\n{followed}"
    status = guide.run("edgeclass service status", where="pi", ok=False)
    assert "waiting" in status.stdout + status.stderr, status
    assert pi.active_state() == "active", "with no bundle yet the unit must wait, not fail"

    # -- deploy from the workstation: a first release, then a second ------------------------------------
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    shutil.copytree(colour_bundle, bundles / "flowers")
    since = pi.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip()
    first = guide.run("edgeclass deploy bundles/flowers pi@raspberrypi.local", where="workstation")
    assert "(first release)" in first.stdout and "healthy on" in first.stdout, first.stdout
    excerpt = pi.journal("--since", since, "-o", "short-precise")
    (tmp_path / "first-deploy-journal.txt").write_text(excerpt)
    print("journal of the first deploy:\n" + excerpt)
    release_a = _releases(pi)["current"]
    _runs_on(pi, release_a)
    assert pi.active_state() == "active" and pi.unit_property("NRestarts") == "0"

    second = guide.run("edgeclass deploy bundles/flowers pi@raspberrypi.local", where="workstation", again=True)
    assert "previous:" in second.stdout and "healthy on" in second.stdout, second.stdout
    release_b = _releases(pi)["current"]
    assert release_b != release_a
    _runs_on(pi, release_b)
    guide.run("edgeclass deploy --status pi@raspberrypi.local", where="workstation")
    guide.not_run("edgeclass deploy bundles/flowers pi@raspberrypi.local --verify-accuracy runs/flowers", TRAINING_RUN)
    guide.not_run("edgeclass deploy bundles/flowers pi@raspberrypi.local --verify-accuracy photos/ --max-images 100 "
                  "--max-drop 0.5", TRAINING_RUN)

    # -- a damaged release behind current: reload refuses it, rollback, reload ---------------------------
    pi.sh(f"printf 'damaged' >> {release_b}/model.tflite")
    refusals = pi.journal().count("reload failed")
    guide.run("sudo systemctl reload edgeclass", where="pi")
    # The reload is prepared in the background: wait for its verdict, not a fixed time, before the rollback.
    pi.wait_for("the refused reload", lambda: pi.journal().count("reload failed") > refusals)
    assert pi.active_state() == "active"
    assert str(_state(pi).get("bundle_path", "")).rstrip("/") == release_b.rstrip("/"), "the running bundle changed"
    guide.run("sudo -u edgeclass edgeclass bundle rollback --root /var/lib/edgeclass", where="pi")
    assert _releases(pi)["current"] == release_a
    guide.run("sudo systemctl reload edgeclass", where="pi", again=False)
    _runs_on(pi, release_a)
    warnings = guide.run("journalctl -u edgeclass -p warning", where="pi").stdout
    assert "model.tflite" in warnings, f"the refused reload is not among the warnings:\n{warnings}"
    security = guide.run("systemd-analyze security edgeclass", where="pi").stdout
    exposure = security.strip().splitlines()[-1]
    assert "Overall exposure level for edgeclass.service" in exposure
    assert float(exposure.split(":")[1].split()[0]) <= 2.0, exposure
    guide.finished()
    assert pi.active_state() == "active" and pi.unit_property("NRestarts") == "0"

"""Saved uncertain frames can be sorted by a person in the service's group, without sudo; by nobody else.

Three real users (numeric ids; no accounts are created): the service, a
person in the service's group, and an outsider. The service is a real
`edgeclass run` under the unit's UMask=0027, started with setpriv as systemd
would start it; the others then try to read, sort and move the frames.
Needs root (to switch users); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SERVICE, SORTER, OUTSIDER = 64010, 64011, 64012  # uids; the service's group id is SERVICE too
# `edgeclass ARGS` with the unit's UMask=0027, which systemd sets before it starts the process.
AS_THE_UNIT = ("import os, sys; os.umask(0o027); from edgeclass.device.cli import main; "
               "sys.argv = ['edgeclass', *sys.argv[1:]]; main()")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to run processes as other users")


def _as(uid: int, groups: list[int], argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    extra = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", *extra, *argv], capture_output=True,
                          text=True, timeout=120, **kwargs)


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


@pytest.fixture()
def shared_tmp():
    """A temporary folder other users can reach (pytest's own is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ec-perm-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_saved_uncertain_frames_are_readable_by_the_sorting_user_without_sudo(shared_tmp, colour_bundle, colour_video):
    """Fault: the folder was made with the service's umask (0750, no group write), so the person in the
    group could look but not sort (make class folders, move frames) without sudo.
    """
    bundle = shutil.copytree(colour_bundle, shared_tmp / "bundle")
    video = Path(shutil.copy(colour_video, shared_tmp / "camera.avi"))
    subprocess.run(["chmod", "-R", "a+rX", str(bundle), str(video)], check=True)
    state = shared_tmp / "state"  # stands for /var/lib/edgeclass: the service's, readable by all
    state.mkdir(mode=0o755)
    os.chown(state, SERVICE, SERVICE)
    folder = state / "uncertain"
    config = shared_tmp / "device.toml"
    config.write_text(f'[model]\nbundle = "{bundle}"\n[source]\nsource = "{video}"\n'
                      f'[service]\nstate_file = "{state}/state.json"\n'
                      f'[uncertain]\ndir = "{folder}"\nthreshold = 1.0\nmax_per_minute = 100\n')
    os.chmod(config, 0o644)

    # The service, as systemd starts it: its own user and group, UMask=0027.
    run = _as(SERVICE, [], _python(AS_THE_UNIT, "run", "--config", str(config), "--max-frames", "8"), cwd="/")
    assert run.returncode == 0, run.stderr
    frames = sorted(folder.glob("*.jpg"))
    assert frames and len(list(folder.glob("*.json"))) == len(frames)
    info = folder.stat()
    assert stat.S_IMODE(info.st_mode) == 0o2770 and (info.st_uid, info.st_gid) == (SERVICE, SERVICE)
    for saved in folder.iterdir():
        assert stat.S_IMODE(saved.stat().st_mode) == 0o640 and saved.stat().st_gid == SERVICE, saved

    # The person in the group: lists, reads, makes a class folder and moves a frame into it.
    sort = _as(SORTER, [SERVICE], _python(
        "import json, os, sys; d = sys.argv[1]; names = sorted(os.listdir(d)); "
        "jpg = [n for n in names if n.endswith('.jpg')][0]; data = open(os.path.join(d, jpg), 'rb').read(); "
        "assert data[:2] == b'\\xff\\xd8', 'not a JPEG'; "
        "meta = json.load(open(os.path.join(d, jpg[:-4] + '.json'))); "
        "os.mkdir(os.path.join(d, 'red')); os.rename(os.path.join(d, jpg), os.path.join(d, 'red', jpg)); "
        "print(json.dumps({'moved': jpg, 'guess': meta['guess']}))", str(folder)))
    assert sort.returncode == 0, sort.stderr
    moved = json.loads(sort.stdout)
    assert (folder / "red" / moved["moved"]).is_file() and moved["guess"] == "red"
    assert (folder / "red").stat().st_gid == SERVICE  # setgid: the class folder stays in the group

    # Anyone else: not even the names.
    peek = _as(OUTSIDER, [], _python("import os, sys; os.listdir(sys.argv[1])", str(folder)))
    assert peek.returncode != 0 and "PermissionError" in peek.stderr

    # The service keeps saving next to the sorted folder, and the cap never touches it.
    again = _as(SERVICE, [], _python(AS_THE_UNIT, "run", "--config", str(config), "--max-frames", "4"), cwd="/")
    assert again.returncode == 0, again.stderr
    assert (folder / "red" / moved["moved"]).is_file() and len(list(folder.glob("*.jpg"))) > len(frames) - 1

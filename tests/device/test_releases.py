"""Local bundle releases: copy, verify, atomic switch, keep N, rollback (real bundles, real interpreter)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edgeclass.device.bundle.contents import MAX_FILE_BYTES
from edgeclass.device.errors import EdgeclassError
from edgeclass.device.fleet.releases import (
    ReleaseError,
    current_release,
    describe_releases,
    install_bundle,
    list_releases,
    previous_release,
    rollback,
)

from .cli_helpers import _MAIN, edgeclass
from .service_fixtures import bundles  # noqa: F401  (fixture)


def _at(second: int) -> datetime:
    return datetime(2025, 3, 14, 10, 15, second, 123456, tzinfo=timezone.utc)


def test_install_switch_and_rollback(tmp_path, bundles):
    root = tmp_path / "edgeclass"
    first = install_bundle(bundles["v1"], root, now=_at(1))
    assert first.previous is None
    assert first.current.name.startswith("colour-v1-20250314T101501.123456Z-")
    link = root / "current"
    assert link.is_symlink() and os.readlink(link) == f"releases/{first.current.name}"  # relative
    assert (link / "bundle.json").is_file()

    second = install_bundle(bundles["v2"], root, now=_at(2))
    assert second.previous == first.current
    assert current_release(root) == second.current
    assert previous_release(root) == first.current

    back = rollback(root)
    assert back.current == first.current and back.previous == second.current
    assert current_release(root) == first.current
    # Nothing older than the first release: a second rollback is refused, current untouched.
    with pytest.raises(ReleaseError, match="no release older than colour-v1-"):
        rollback(root)
    assert current_release(root) == first.current
    # No temporary names left behind.
    assert sorted(p.name for p in root.iterdir()) == [".releases.lock", "current", "releases"]


def test_keep_n_keeps_the_new_and_the_replaced_release(tmp_path, bundles):
    root = tmp_path / "edgeclass"
    names = [install_bundle(bundles["v1" if i % 2 else "v2"], root, keep=2, now=_at(i), verify_inference=(i == 0)).current
             for i in range(4)]
    assert [r.name for r in list_releases(root)] == [names[2].name, names[3].name]
    # After a rollback, the next install keeps the release we rolled back *to*
    # (the known good one) rather than the newer one we abandoned.
    rollback(root)
    assert current_release(root) == names[2]
    newest = install_bundle(bundles["v1"], root, keep=2, now=_at(9), verify_inference=False)
    assert {r.name for r in list_releases(root)} == {names[2].name, newest.current.name}
    assert rollback(root).current == names[2]


def test_damaged_bundle_is_refused_and_current_untouched(tmp_path, bundles):
    root = tmp_path / "edgeclass"
    good = install_bundle(bundles["v1"], root, verify_inference=False).current
    with pytest.raises(EdgeclassError, match=r"model\.tflite: sha256 is .* bundle\.json expects"):
        install_bundle(bundles["damaged"], root)
    assert current_release(root) == good
    assert [r.name for r in list_releases(root)] == [good.name]
    assert [p.name for p in (root / "releases").iterdir()] == [good.name]


def test_model_that_fails_test_inference_is_refused(tmp_path, bundles):
    """A bundle whose manifest is consistent but whose model the interpreter rejects (garbage model bytes)."""
    from edgeclass.device.bundle import sha256_file

    bad = tmp_path / "garbage"
    shutil.copytree(bundles["v1"], bad)
    (bad / "model.tflite").write_bytes(b"TFL3 this is not a flatbuffer" * 100)
    manifest = json.loads((bad / "bundle.json").read_text())
    manifest["files"]["model.tflite"] = sha256_file(bad / "model.tflite")
    (bad / "bundle.json").write_text(json.dumps(manifest))
    root = tmp_path / "edgeclass"
    with pytest.raises(EdgeclassError, match="model.tflite"):
        install_bundle(bad, root)
    assert current_release(root) is None and list_releases(root) == []


def test_current_that_is_a_directory_is_refused(tmp_path, bundles):
    root = tmp_path / "edgeclass"
    (root / "current").mkdir(parents=True)
    with pytest.raises(ReleaseError, match="current: is not a symlink; move it away"):
        install_bundle(bundles["v1"], root, verify_inference=False)


def test_keep_must_be_positive(tmp_path, bundles):
    with pytest.raises(ReleaseError, match="--keep is 0"):
        install_bundle(bundles["v1"], tmp_path, keep=0)


def test_install_copies_only_the_listed_files_world_readable(tmp_path, bundles):
    """A bundle made under a strict umask (0700 directory, 0600 files) with an empty folder in it:
    the release holds bundle.json and the listed files only, 0644 in 0755 directories."""
    private = Path(shutil.copytree(bundles["v1"], tmp_path / "private"))
    (private / "report" / "empty").mkdir(parents=True)
    for path in [private, *private.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    root = tmp_path / "edgeclass"
    release = install_bundle(private, root, verify_inference=False).current.path
    assert sorted(p.relative_to(release).as_posix() for p in release.rglob("*")) == ["bundle.json", "labels.txt", "model.tflite"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in release.rglob("*")} == {0o644}
    assert {stat.S_IMODE(p.stat().st_mode) for p in (release, release.parent, root)} == {0o755}


def test_install_refuses_an_oversized_file_by_name_and_leaves_current(tmp_path, bundles):
    root = tmp_path / "edgeclass"
    good = install_bundle(bundles["v1"], root, verify_inference=False).current
    big = Path(shutil.copytree(bundles["v2"], tmp_path / "big"))
    with open(big / "model_edgetpu.tflite", "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse
    manifest = json.loads((big / "bundle.json").read_text())
    manifest["files"]["model_edgetpu.tflite"] = "0" * 64
    (big / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeclassError, match=r"big/model_edgetpu\.tflite: 256 MB, more than the 256 MB limit for one bundle file"):
        install_bundle(big, root)
    assert current_release(root) == good and [r.name for r in list_releases(root)] == [good.name]


def test_install_refuses_a_symlinked_model_and_copies_nothing(tmp_path, bundles):
    linked = Path(shutil.copytree(bundles["v1"], tmp_path / "linked"))
    (linked / "model.tflite").unlink()
    (linked / "model.tflite").symlink_to(bundles["v1"] / "model.tflite")
    root = tmp_path / "edgeclass"
    with pytest.raises(EdgeclassError, match=r"linked/model\.tflite: is a symlink"):
        install_bundle(linked, root)
    assert current_release(root) is None and not (root / "releases").exists()  # refused before anything was made


def test_install_refuses_bad_bundle_defaults_before_the_service_would(tmp_path, bundles):
    bad = Path(shutil.copytree(bundles["v1"], tmp_path / "bad-defaults"))
    manifest = json.loads((bad / "bundle.json").read_text())
    manifest["defaults"] = {"decision": {"threshold": 1.5}}
    (bad / "bundle.json").write_text(json.dumps(manifest))
    root = tmp_path / "edgeclass"
    with pytest.raises(EdgeclassError, match=r"bundle\.json defaults: \[decision\] threshold = 1\.5 must be between 0 and 1"):
        install_bundle(bad, root)
    assert current_release(root) is None


def test_stale_incoming_copies_are_removed_but_never_a_live_install(tmp_path, bundles):
    """An install killed while copying leaves releases/.incoming-*; the next install removes it. One made by an
    install that is running (it holds the releases lock) is left alone: the next install waits for the lock."""
    root = tmp_path / "edgeclass"
    install_bundle(bundles["v1"], root, verify_inference=False)
    stale = root / "releases" / ".incoming-dead1234"
    (stale / "bundle").mkdir(parents=True)
    (stale / "bundle" / "model.tflite").write_bytes(b"")  # half a copy
    assert describe_releases(root)["incoming"] == [stale.name]
    install_bundle(bundles["v2"], root, verify_inference=False)
    assert not stale.exists()
    assert describe_releases(root)["incoming"] == []

    # A live install: this process holds the lock while "its" copy exists.
    live = root / "releases" / ".incoming-live5678"
    with open(root / ".releases.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        live.mkdir()
        waiting = subprocess.Popen([sys.executable, "-c", _MAIN, "bundle", "install", str(bundles["v1"]), "--root", str(root)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)  # time to start, load the bundle and reach the lock
        assert waiting.poll() is None, waiting.communicate()
        assert live.is_dir(), "a second install removed the copy of an install still holding the lock"
        live.rmdir()  # the live install finishes
        fcntl.flock(lock, fcntl.LOCK_UN)
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert "installed " in out and describe_releases(root)["incoming"] == []


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)")
def test_release_is_synced_to_storage_before_current_switches(tmp_path, bundles):
    """Power loss cannot be produced here; strace shows the order of the real system calls instead:
    every file and directory of the release is fsynced before the rename that switches current."""
    root = tmp_path / "edgeclass"
    trace = tmp_path / "trace.txt"
    result = subprocess.run(["strace", "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
                             "-o", str(trace), sys.executable, "-c", _MAIN, "bundle", "install", str(bundles["v1"]),
                             "--root", str(root)], capture_output=True, text=True, timeout=180)
    if result.returncode != 0 and "PTRACE" in (result.stderr + trace.read_text() if trace.exists() else result.stderr):
        pytest.skip(f"strace cannot trace here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr
    calls = trace.read_text().splitlines()
    switch = next(i for i, line in enumerate(calls) if "rename" in line and f'"{root}/current"' in line)
    synced = {m for line in calls[:switch] if "fsync(" in line for m in re.findall(r"<([^>]+)>", line)}
    release = Path(os.path.realpath(root / "current"))
    incoming = {p for p in synced if "/.incoming-" in p}
    assert incoming, f"no file of the copy was fsynced before current switched:\n" + "\n".join(calls[:switch])
    for name in ("bundle.json", "labels.txt", "model.tflite"):
        assert any(p.endswith(f"/bundle/{name}") for p in incoming), f"{name} was not synced before the switch"
    assert any(p.endswith("/bundle") for p in incoming), "the release directory was not synced"
    assert str(release.parent) in synced, "releases/ (holding the new name) was not synced before the switch"


def test_bundle_releases_command_lists_current_and_previous(tmp_path, bundles):
    root = tmp_path / "edgeclass"
    first = install_bundle(bundles["v1"], root, now=_at(1), verify_inference=False).current
    second = install_bundle(bundles["v2"], root, now=_at(2), verify_inference=False).current
    listed = edgeclass("bundle", "releases", "--root", root, "--json")
    assert listed.returncode == 0, listed.stderr
    summary = json.loads(listed.stdout)
    assert summary["current"] == str(second.path.resolve()) and summary["previous"] == str(first.path.resolve())
    assert summary["releases"] == [first.name, second.name] and summary["current_has_edgetpu_model"] is False
    text = edgeclass("bundle", "releases", "--root", root).stdout
    assert f"{second.name}  <- current" in text and f"{first.name}  <- previous" in text

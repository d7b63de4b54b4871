"""Local bundle releases: copy, verify, atomic switch, keep N, rollback (real bundles, real interpreter)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edgeclass.device.errors import EdgeclassError
from edgeclass.device.fleet.releases import (
    ReleaseError,
    current_release,
    install_bundle,
    list_releases,
    previous_release,
    rollback,
)

from .service_fixtures import bundles  # noqa: F401  (fixture)


def _at(second: int) -> datetime:
    return datetime(2025, 3, 14, 10, 15, second, 123456, tzinfo=timezone.utc)


def test_install_switch_and_rollback(tmp_path, bundles):
    root = tmp_path / "edgeclass"
    first = install_bundle(bundles["v1"], root, now=_at(1))
    assert first.previous is None
    assert first.current.name.startswith("mobilenet-v1-20250314T101501.123456Z-")
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
    with pytest.raises(ReleaseError, match="no release older than mobilenet-v1-"):
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
    import json
    import shutil

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

"""Versioned bundle releases on the device, switched by one atomic symlink.

Layout under a root (``/var/lib/edgeclass`` on a Pi)::

    releases/flowers-v3-20250314T101502.123456Z-1a2b3c4d/   one copied bundle each
    releases/flowers-v4-20250320T090000.000001Z-9f8e7d6c/
    current -> releases/flowers-v4-...                      what the service runs
    previous -> releases/flowers-v3-...                     what ``rollback`` returns to

A new bundle is copied next to the others (only ``bundle.json`` and the files
it lists, under ``releases/.incoming-*`` while the copy is made), verified
*in place* (contents, hashes, then a test inference on a grey frame), synced
to storage, and only then becomes ``current``: the symlink is created under a
temporary name and renamed over ``current``, which is atomic, so the service
never sees a missing or half-copied bundle, even after a power cut. The
release name carries the UTC install time (lexical order = install order) and
the start of the sha256 of bundle.json (which lists every file's hash), so two
different bundles with one name stay apart.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..bundle import EDGETPU_MODEL, MANIFEST, load_bundle
from ..bundle.contents import copy_listed
from ..errors import EdgeclassError
from ..files import DIR_MODE, fsync_dir, fsync_tree

log = logging.getLogger(__name__)

RELEASES = "releases"
CURRENT = "current"
PREVIOUS = "previous"
INCOMING = ".incoming-"  # a copy being made, under the releases lock
_NAME = re.compile(r"^(?P<bundle>.+)-(?P<stamp>\d{8}T\d{6}\.\d{6}Z)-(?P<sha>[0-9a-f]{8})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ReleaseError(EdgeclassError):
    """A release cannot be installed, found or switched to."""


@dataclass(frozen=True)
class Release:
    """One installed bundle under ``root/releases``."""

    path: Path
    bundle: str
    stamp: str  # UTC install time, e.g. 20250314T101502.123456Z
    sha: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Switch:
    """What an install or rollback did."""

    current: Release
    previous: Release | None
    removed: tuple[Path, ...] = ()

    def to_json(self) -> dict:
        """Resolved paths: what the service reports as its ``bundle_path`` after following ``current``."""
        return {
            "release": str(self.current.path.resolve()),
            "name": self.current.name,
            "previous": str(self.previous.path.resolve()) if self.previous else None,
            "removed": [str(p) for p in self.removed],
        }


def list_releases(root: str | Path) -> list[Release]:
    """Installed releases, oldest first; other entries (temporary copies, stray files) are ignored."""
    folder = Path(root) / RELEASES
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            found.append(Release(entry, match["bundle"], match["stamp"], match["sha"]))
    return sorted(found, key=lambda r: (r.stamp, r.name))


def current_release(root: str | Path) -> Release | None:
    """The release ``root/current`` points at, or None before the first install."""
    return _linked(Path(root), CURRENT)


def previous_release(root: str | Path) -> Release | None:
    """The release ``rollback`` would switch to, or None."""
    root = Path(root)
    try:
        linked = _linked(root, PREVIOUS)
    except ReleaseError:
        linked = None  # pruned or hand-edited: fall back to install order
    current = current_release(root)
    if linked is not None and linked != current:
        return linked
    if current is None:
        return None
    older = [r for r in list_releases(root) if (r.stamp, r.name) < (current.stamp, current.name)]
    return older[-1] if older else None


def describe_releases(root: str | Path) -> dict:
    """What is installed under ``root``, for ``bundle releases --json`` and ``deploy --status``.

    ``current`` and ``previous`` are resolved paths (what the service reports
    as its ``bundle_path``), or None; a link that is broken or not a release
    is reported under ``problems`` instead of raising.
    """
    root = Path(root)
    summary: dict = {"root": str(root), "current": None, "previous": None, "problems": []}
    for key, find in (("current", current_release), ("previous", previous_release)):
        try:
            release = find(root)
        except ReleaseError as exc:
            summary["problems"].append(str(exc))
            continue
        summary[key] = str(release.path.resolve()) if release else None
    summary["current_has_edgetpu_model"] = bool(summary["current"]) and (Path(summary["current"]) / EDGETPU_MODEL).is_file()
    summary["releases"] = [r.name for r in list_releases(root)]
    folder = root / RELEASES
    summary["incoming"] = sorted(p.name for p in folder.glob(f"{INCOMING}*")) if folder.is_dir() else []
    return summary


def _linked(root: Path, name: str) -> Release | None:
    link = root / name
    if not link.is_symlink():
        if link.exists():
            raise ReleaseError(f"{link}: is not a symlink; move it away so releases can be switched atomically")
        return None
    target = link.resolve()
    for release in list_releases(root):
        if release.path.resolve() == target:
            return release
    raise ReleaseError(f"{link}: points at {os.readlink(link)}, which is not an installed release under {root / RELEASES}")


def install_bundle(bundle: str | Path, root: str | Path, keep: int = 3, *, verify_inference: bool = True,
                   now: datetime | None = None) -> Switch:
    """Copy ``bundle`` into a new release, verify the copy, make it current, keep the newest ``keep``.

    Only ``bundle.json`` and the files it lists are copied, each a regular
    file within the size caps (:mod:`edgeclass.device.bundle.contents`),
    world-readable. The copy is synced to storage before ``current`` switches
    to it, so a power cut leaves the old release or the complete new one,
    never a zero-length model behind ``current``. Copies left by an install
    that died (``releases/.incoming-*``) are removed first: installs hold the
    releases lock while they copy, so one found under the lock is stale.
    On any failure the copy is removed and ``current`` is untouched.
    """
    if keep < 1:
        raise ReleaseError(f"--keep is {keep}; keep at least 1 release (2 or more to be able to roll back)")
    source = load_bundle(bundle)  # refuse a damaged bundle before copying anything
    root = Path(root)
    folder = root / RELEASES
    _make_dirs(folder)
    with _locked(root):
        _remove_stale_incoming(folder)
        previous = current_release(root)
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S.%fZ")
        incoming = Path(tempfile.mkdtemp(prefix=INCOMING, dir=folder))
        try:
            copy = incoming / "bundle"
            copy_listed(source.path, source.manifest["files"], copy)
            sha = hashlib.sha256((copy / MANIFEST).read_bytes()).hexdigest()[:8]
            name = f"{_UNSAFE.sub('_', source.name).strip('._') or 'bundle'}-{stamp}-{sha}"
            final = folder / name
            if final.exists():
                raise ReleaseError(f"{final}: already exists")
            check_release(copy, verify_inference=verify_inference)
            fsync_tree(copy)
            os.rename(copy, final)
            fsync_dir(folder)  # the release's name reaches the card before the link that points at it
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        release = Release(final, *_NAME.match(name).group("bundle", "stamp", "sha"))
        switch_to(root, release)
        if previous is not None:
            _link(root, PREVIOUS, previous)
        removed = _prune(root, keep, [release, previous] if previous else [release])
    log.info("installed %s (previous: %s)", release.path, previous.name if previous else "none")
    return Switch(release, previous, removed)


def _remove_stale_incoming(folder: Path) -> None:
    """Remove ``.incoming-*`` copies; call with the releases lock held (so none belongs to a live install)."""
    for entry in folder.glob(f"{INCOMING}*"):
        log.info("removing %s, left by an install that did not finish", entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _make_dirs(folder: Path) -> None:
    """``root/releases`` and its parents, 0755 whatever the umask (the service user reads them)."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        os.chmod(path, DIR_MODE)


def rollback(root: str | Path) -> Switch:
    """Switch ``current`` back to the release it replaced (then, on a second call, the one before)."""
    root = Path(root)
    if not root.is_dir():
        raise ReleaseError(f"{root}: no such directory (no release was installed there)")
    with _locked(root):
        current = current_release(root)
        if current is None:
            raise ReleaseError(f"{root / CURRENT}: no current release to roll back from")
        target = previous_release(root)
        if target is None:
            raise ReleaseError(f"{root / RELEASES}: no release older than {current.name} to roll back to")
        switch_to(root, target)
        older = [r for r in list_releases(root) if (r.stamp, r.name) < (target.stamp, target.name)]
        if older:
            _link(root, PREVIOUS, older[-1])
        else:
            (root / PREVIOUS).unlink(missing_ok=True)
    log.info("rolled back from %s to %s", current.name, target.name)
    return Switch(target, current)


def check_release(path: Path, *, verify_inference: bool = True) -> None:
    """Contents, hashes and shapes, one test inference on the CPU model as the service will run it, and the
    bundle's ``defaults``.

    The CPU model: a USB Coral is held by the running service and cannot be
    opened twice.
    """
    from ..service.config import bundle_defaults, check_values

    if verify_inference:
        from ..pipeline.classifier import EdgeTPU
        from ..pipeline.verify import verify_bundle

        bundle = verify_bundle(path, threads=1, edgetpu=EdgeTPU.OFF).bundle
    else:
        bundle = load_bundle(path)
    # The service would refuse a bad value here at its next start or reload: refuse it now instead.
    check_values(bundle_defaults(bundle.manifest), lambda s, k: f"{path / MANIFEST} defaults", path)


def switch_to(root: Path, release: Release) -> None:
    """Point ``root/current`` at ``release`` atomically."""
    _link(root, CURRENT, release)


def _link(root: Path, name: str, release: Release) -> None:
    # Relative target: the root can be moved or mounted elsewhere (an SD card
    # read on a workstation). Created under a temporary name, then renamed
    # over the old link: rename(2) is atomic, so readers see old or new.
    link = root / name
    if link.exists() and not link.is_symlink():
        raise ReleaseError(f"{link}: is not a symlink; move it away so releases can be switched atomically")
    tmp = root / f".{name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.join(RELEASES, release.name), tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename is atomic but lives in the page cache until the directory is
    # synced: a Pi losing power right after a deploy should not boot the old link.
    fsync_dir(root)


def _prune(root: Path, keep: int, first: list[Release]) -> tuple[Path, ...]:
    """Keep ``keep`` releases: ``first`` (the new one, then the one it replaced), then the newest others."""
    keepers = {r.path for r in first[:keep]}
    for release in reversed(list_releases(root)):
        if len(keepers) >= keep:
            break
        keepers.add(release.path)
    removed = []
    for release in list_releases(root):
        if release.path not in keepers:
            shutil.rmtree(release.path)
            removed.append(release.path)
            log.info("removed old release %s", release.name)
    if not (root / PREVIOUS).exists():  # its target was pruned (--keep 1)
        (root / PREVIOUS).unlink(missing_ok=True)
    return tuple(removed)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One install or rollback at a time (a deploy racing a manual rollback)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".releases.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

"""What a bundle directory may hold, and copying exactly that: a bundle is data, never instructions.

A bundle holds ``bundle.json`` and the regular files its ``"files"`` object
lists (each with its sha256), in plain sub-directories such as ``report/``.
Nothing else: a symlink (it could point at ``/etc/shadow`` or ``/dev/zero``),
a FIFO, socket or device file (reading one blocks or never ends), a name with
``..`` or an absolute name (it would escape the bundle), or a file the
manifest does not list is refused, with one line naming it. The converter and
``bundle create`` list every file they write, ``report/`` files included.

Sizes are capped, so a bundle cannot fill a Pi's SD card or memory:
:data:`MAX_FILE_BYTES` per file, :data:`MAX_TOTAL_BYTES` in all,
:data:`MAX_ENTRIES` files and directories, :data:`MAX_MANIFEST_BYTES` for
``bundle.json``. The largest classifiers edgeclass makes are a few MB.

:func:`copy_listed` is how a bundle is copied onto a device (a new release):
only the listed files, read without following symlinks, counted against the
caps while they are read, written world-readable (0644 files, 0755
directories, whatever the umask) so the service user can read a release that
the deploying user installed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath
from typing import IO, Mapping

from ..errors import BundleError
from ..files import DIR_MODE, FILE_MODE
from .manifest import MANIFEST

MB = 1 << 20
MAX_FILE_BYTES = 256 * MB
MAX_TOTAL_BYTES = 512 * MB
MAX_MANIFEST_BYTES = 8 * MB
MAX_ENTRIES = 1000
_CHUNK = 1 << 20


def check_file_names(files: Mapping[str, object], where: Path) -> None:
    """Refuse manifest ``"files"`` names that are not plain relative paths inside the bundle."""
    for name, digest in files.items():
        pure = PurePosixPath(name) if isinstance(name, str) else None
        if pure is None or not name or "\0" in name or pure.is_absolute() or ".." in pure.parts:
            raise BundleError(f"{where}: file entry {name!r} points outside the bundle "
                              "(expected a relative path such as 'model.tflite' or 'report/metrics.json')")
        if pure.as_posix() != name:
            raise BundleError(f"{where}: file entry {name!r} is not a plain relative path (write it as {pure.as_posix()!r})")
        if name == MANIFEST:
            raise BundleError(f"{where}: 'files' lists {MANIFEST} itself; it cannot hold its own sha256")
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise BundleError(f"{where}: file entry {name!r} has sha256 {digest!r}, expected 64 lowercase hex digits")


def scan_bundle(bundle_dir: Path, files: Mapping[str, object]) -> dict[str, int]:
    """Walk ``bundle_dir`` without following symlinks; refuse anything but listed regular files.

    Returns the size of each listed file. A listed file that is missing is
    refused too. The bundle directory itself may be a symlink (the
    ``current`` release link is one); nothing inside it may.
    """
    sizes: dict[str, int] = {}
    entries = 0
    pending: list[tuple[Path, str]] = [(bundle_dir, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise BundleError(f"{directory}: cannot read the bundle directory ({exc.strerror})") from None
        for entry in children:
            entries += 1
            if entries > MAX_ENTRIES:
                raise BundleError(f"{bundle_dir}: holds more than {MAX_ENTRIES} files and directories; "
                                  "a bundle is a model, its labels and a small report")
            name = prefix + entry.name
            path = Path(entry.path)
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                raise BundleError(f"{path}: cannot read ({exc.strerror})") from None
            if stat.S_ISLNK(info.st_mode):
                raise BundleError(f"{path}: is a symlink; a bundle holds regular files only "
                                  "(put the file itself there and re-create the bundle)")
            if stat.S_ISDIR(info.st_mode):
                if name in files:
                    raise BundleError(f"{path}: is a directory, but {MANIFEST} lists it as a file")
                pending.append((path, name + "/"))
                continue
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{path}: is a {_kind(info.st_mode)}; a bundle holds regular files only")
            if name == MANIFEST:
                if info.st_size > MAX_MANIFEST_BYTES:
                    raise BundleError(f"{path}: {_mb(info.st_size)}, more than the {_mb(MAX_MANIFEST_BYTES)} "
                                      f"limit for {MANIFEST}")
                continue
            if name not in files:
                raise BundleError(f"{path}: is not listed in {MANIFEST} 'files'; a bundle holds only the files its "
                                  "manifest lists (remove it, or re-create the bundle with 'edgeclass bundle create' "
                                  "or 'edgeclass convert')")
            check_size(path, info.st_size)
            sizes[name] = info.st_size
    for name in files:
        if name not in sizes:
            raise BundleError(f"{bundle_dir / name}: missing, but {MANIFEST} lists it")
    check_total(bundle_dir, sum(sizes.values()))
    return sizes


def check_size(path: Path, size: int) -> None:
    """Refuse one file over :data:`MAX_FILE_BYTES`."""
    if size > MAX_FILE_BYTES:
        raise BundleError(f"{path}: {_mb(size)}, more than the {_mb(MAX_FILE_BYTES)} limit for one bundle file")


def check_total(bundle_dir: Path, total: int) -> None:
    """Refuse a bundle whose files add up to more than :data:`MAX_TOTAL_BYTES`."""
    if total > MAX_TOTAL_BYTES:
        raise BundleError(f"{bundle_dir}: its files add up to {_mb(total)}, more than the "
                          f"{_mb(MAX_TOTAL_BYTES)} limit for a bundle")


def open_regular(path: Path) -> IO[bytes]:
    """Open ``path`` for reading only if it is a regular file, never following a symlink.

    ``O_NONBLOCK`` so a FIFO swapped in after the scan cannot block the
    open; ``fstat`` on the opened file, so what is read is what was checked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if os.path.islink(path):
            raise BundleError(f"{path}: is a symlink; a bundle holds regular files only") from None
        raise BundleError(f"{path}: cannot read ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BundleError(f"{path}: is a {_kind(info.st_mode)}; a bundle holds regular files only")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_manifest_bytes(path: Path) -> bytes:
    """``bundle.json``'s bytes: a regular file (no symlink), at most :data:`MAX_MANIFEST_BYTES`."""
    with open_regular(path) as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: more than the {_mb(MAX_MANIFEST_BYTES)} limit for {MANIFEST}")
    return data


def sha256_listed(path: Path) -> str:
    """sha256 of a listed file, opened as :func:`open_regular` does and read at most to the size cap."""
    digest = hashlib.sha256()
    size = 0
    with open_regular(path) as fh:
        while block := fh.read(_CHUNK):
            size += len(block)
            check_size(path, size)
            digest.update(block)
    return digest.hexdigest()


def copy_listed(bundle_dir: Path, files: Mapping[str, str], dest: Path) -> None:
    """Copy ``bundle.json`` and the listed files of ``bundle_dir`` into the new directory ``dest``.

    Each file is read through :func:`open_regular`, checked against the size
    caps as it is read (a file may have grown since it was listed) and its
    sha256 compared with the manifest's, so the copy is exactly what was
    listed. Written 0644 in 0755 directories, whatever the umask. Not synced:
    the caller syncs the whole tree once (:func:`edgeclass.device.files.fsync_tree`).
    """
    make_dir(dest)
    total = 0
    for name in [MANIFEST, *sorted(files)]:
        source, target = bundle_dir / name, dest / name
        for parent in reversed(PurePosixPath(name).parents[:-1]):
            if not (dest / parent).is_dir():
                make_dir(dest / parent)
        digest = hashlib.sha256()
        size = 0
        with open_regular(source) as src, _create(target) as out:
            while block := src.read(_CHUNK):
                size += len(block)
                if name == MANIFEST and size > MAX_MANIFEST_BYTES:
                    raise BundleError(f"{source}: more than the {_mb(MAX_MANIFEST_BYTES)} limit for {MANIFEST}")
                check_size(source, size)
                check_total(bundle_dir, total + size)
                digest.update(block)
                out.write(block)
        total += size
        if name != MANIFEST and digest.hexdigest() != files[name]:
            raise BundleError(f"{source}: changed while it was copied (sha256 is {digest.hexdigest()[:16]}…, "
                              f"{MANIFEST} expects {str(files[name])[:16]}…); copy the bundle again")


def make_dir(path: Path) -> None:
    """Create one directory, mode 0755 whatever the umask."""
    os.mkdir(path)
    os.chmod(path, DIR_MODE)


def _create(path: Path) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away
    return os.fdopen(fd, "wb")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB" if size < 10 * MB else f"{size / MB:.0f} MB"

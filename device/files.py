"""Writing files so that a reader, a crash or a power cut never sees half of one.

The stages write through :func:`atomic_write` what others read while it may
change: the bundle writer, releases on the device, the service's state file,
saved frames, the trainer's run files and checkpoint state. The data goes to
a temporary file in the same directory (same filesystem, so the final rename
is atomic), is optionally flushed to the storage, and is renamed over the
target: a reader sees the old file or the new one, never a mix.

``durable=True`` adds ``fsync`` of the file and of its directory. An SD card
that loses power can otherwise keep the rename but not the data, leaving a
zero-length file behind the new name: releases and bundles pay for it, the
state file in ``/run`` (memory) does not.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# World-readable: the service user reads what the deploying user wrote, and the
# person sorting saved frames reads what the service wrote.
FILE_MODE = 0o644
DIR_MODE = 0o755


def atomic_write(path: str | Path, data: bytes | str, *, mode: int = FILE_MODE, durable: bool = False) -> Path:
    """Replace ``path`` with ``data`` atomically; ``durable`` also syncs it to storage."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        # mkstemp creates 0600 whatever the umask; the mode is part of the contract.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (renames, new files) to storage."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """Flush every regular file under ``root``, then every directory, deepest first.

    Used before a copied release becomes ``current``: the symlink switch must
    never reach the card before the files it points at.
    """
    root = Path(root)
    directories = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            file_path = Path(dirpath, name)
            if file_path.is_symlink() or not file_path.is_file():
                continue
            with open(file_path, "rb") as fh:
                os.fsync(fh.fileno())
        directories += [Path(dirpath, d) for d in dirnames]
    for directory in reversed(directories):
        fsync_dir(directory)

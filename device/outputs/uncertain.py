"""Keeping the frames the model was unsure about, so a person can label them and retrain.

Off by default (``[uncertain] dir`` in the config, ``--save-uncertain DIR``).
A frame whose top raw score is below ``threshold`` is written straight into
the folder as ``<UTC time>_<frame>_<guess>.jpg`` plus a ``.json`` sidecar
(time, source, bundle, every label's score)::

    uncertain/
      20250611T081500.123Z_f0001834_daisy.jpg
      20250611T081500.123Z_f0001834_daisy.json

To use them, make one sub-folder per class *inside that folder* and move the
JPEGs into the right one: ``edgeclass train --data uncertain/`` (or a copy
merged with the original dataset) then reads the class folders; loose files
at the top are not classes and sidecars are not images, so both are ignored.
Only the loose top-level files are this module's: sorted frames in class
folders are never counted against the cap nor deleted.

Who may read them: the folder is made group-writable and setgid
(``FOLDER_MODE``), frames are group-readable (``FRAME_MODE``), so members of
the service's group (``service install`` adds the user who ran it) sort them
without sudo, and nobody else reads them.

Saving is rate-limited (``max_per_minute``, a sliding minute) and disk-capped
(``max_mb``): after each save the oldest loose frames are removed until the
folder's loose files fit again. The frame loop only decides and queues; JPEG
encoding and writing happen in the output's own thread.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import EdgeclassError
from ..files import atomic_write
from ..pipeline.decide import Decision
from ..pipeline.loop import Runner
from ..pipeline.sources import Frame
from .base import QueuedOutput
from .dataset import utc_stamp
from .config import UncertainConfig

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
# The person who sorts the frames is in the service's group, not the service's
# user: the folder is group-writable (to make class folders and move frames)
# and setgid (what is made in it stays in the group); frames are group-readable.
# Under systemd the unit's StateDirectoryMode= gives the default folder the same
# mode; a folder that already exists keeps the mode its owner chose.
FOLDER_MODE = 0o2770
FRAME_MODE = 0o640
SAVED_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z_f\d+_.*\.(jpg|json)$")  # what this module writes, nothing else
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UncertainSaver(QueuedOutput):
    """An output that saves low-confidence frames as JPEG + JSON, rate-limited and disk-capped."""

    name = "uncertain"
    sections = ("uncertain",)

    def __init__(self, directory: str | Path, *, threshold: float = 0.3, max_per_minute: int = 6,
                 max_mb: float = 200.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.threshold = threshold
        self.max_per_minute = max_per_minute
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.clock = clock
        self.saved = 0
        self._recent: deque[float] = deque()
        self._warned = False
        self._context: dict = {}
        try:
            if not self.directory.is_dir():
                self.directory.mkdir(parents=True, exist_ok=True)
                # Made here: shared with the group, whatever the umask (see FOLDER_MODE).
                os.chmod(self.directory, FOLDER_MODE)
        except OSError as exc:
            raise EdgeclassError(f"{self.directory}: cannot create the uncertain-frames folder ({exc.strerror})") from None
        # Oldest first: (stem, bytes of the .jpg and .json together).
        self._index: deque[tuple[str, int]] = deque(self._scan())
        self._total = sum(size for _, size in self._index)
        super().__init__()

    @classmethod
    def from_config(cls, config) -> "UncertainSaver | None":
        u: UncertainConfig = config.uncertain
        if u.dir is None:
            return None
        log.info("saving frames with a top score below %g into %s (at most %d a minute, %g MB)",
                 u.threshold, u.dir, u.max_per_minute, u.max_mb)
        return cls(u.dir, threshold=u.threshold, max_per_minute=u.max_per_minute, max_mb=u.max_mb)

    def _scan(self) -> list[tuple[str, int]]:
        sizes: dict[str, int] = {}
        for entry in os.scandir(self.directory):
            if entry.is_file() and SAVED_NAME.match(entry.name):
                stem = entry.name.rsplit(".", 1)[0]
                sizes[stem] = sizes.get(stem, 0) + entry.stat().st_size
        return sorted(sizes.items())  # names start with the UTC time: sorted = oldest first

    def start(self, run: Runner) -> None:
        self._run = run

    def write(self, frame: Frame, decision: Decision) -> None:
        scores = decision.scores
        if scores is None or float(np.max(scores)) >= self.threshold:
            return
        now = self.clock()
        while self._recent and now - self._recent[0] >= 60.0:
            self._recent.popleft()
        if len(self._recent) >= self.max_per_minute:
            return
        self._recent.append(now)
        run = getattr(self, "_run", None)
        extra = {"bundle": run.bundle.name, "bundle_path": str(run.bundle.path),
                 "source": run.source_description()} if run is not None else {}
        self.submit((frame, decision, extra))

    def process(self, item) -> None:
        frame, decision, extra = item
        self.save(frame.rgb, decision.scores, decision.labels, frame_index=frame.index, timestamp=frame.timestamp,
                  guess=decision.top_k[0].label if decision.top_k else "unknown", extra=extra)

    def save(self, rgb: np.ndarray, scores: np.ndarray, labels, *, frame_index: int = 0,
             timestamp: float | None = None, guess: str = "unknown", extra: dict | None = None) -> Path | None:
        """Write one frame and its sidecar; returns the JPEG path (None when writing failed)."""
        import cv2

        timestamp = time.time() if timestamp is None else timestamp
        when = datetime.fromtimestamp(timestamp, timezone.utc)
        stem = f"{utc_stamp(timestamp)}_f{frame_index:07d}_{_safe(guess)}"
        jpg, sidecar = self.directory / f"{stem}.jpg", self.directory / f"{stem}.json"
        order = np.argsort(scores)[::-1]
        record = {
            "time": when.isoformat(timespec="milliseconds"),
            "frame": frame_index,
            "guess": guess,
            "top_score": round(float(scores[order[0]]), 4),
            "threshold": self.threshold,
            **(extra or {}),
            # Every label's score, best first: enough to sort by confusion later.
            "scores": {labels[i]: round(float(scores[i]), 4) for i in order},
        }
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        try:
            if not ok:
                raise OSError("JPEG encoding failed")
            atomic_write(jpg, encoded.tobytes(), mode=FRAME_MODE)
            atomic_write(sidecar, json.dumps(record, indent=1) + "\n", mode=FRAME_MODE)
        except OSError as exc:  # disk full, folder removed: losing a sample must not stop the service
            if not self._warned:
                self._warned = True
                log.warning("%s: cannot save uncertain frames (%s); skipping them", self.directory,
                            getattr(exc, "strerror", None) or exc)
            for path in (jpg, sidecar):
                path.unlink(missing_ok=True)
            return None
        self.saved += 1
        size = jpg.stat().st_size + sidecar.stat().st_size
        self._index.append((stem, size))
        self._total += size
        self._enforce_cap()
        return jpg

    def _enforce_cap(self) -> None:
        while self._index and self._total > self.max_bytes:
            stem, size = self._index.popleft()
            self._total -= size
            for suffix in (".jpg", ".json"):
                # Already moved into a class folder by a person: that is the point, not an error.
                (self.directory / f"{stem}{suffix}").unlink(missing_ok=True)

    @property
    def total_bytes(self) -> int:
        return self._total


def _safe(label: str) -> str:
    return _UNSAFE.sub("-", label).strip("-")[:40] or "unknown"

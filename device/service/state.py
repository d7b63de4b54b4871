"""The service's state file: what the run loop is doing, for ``edgeclass service status`` and deploy.

The run loop rewrites one small JSON object every few seconds::

    {"pid": 812, "started_at": 1718000000.0, "updated_at": 1718000123.4,
     "status": "14.8 fps, daisy (0.91), bundle flowers-v3",
     "fps": 14.8, "label": "daisy", "frames": 1820, "dropped": 12, "reopens": 0,
     "last_error": null,
     "bundle_name": "flowers-v3", "bundle_path": "/var/lib/edgeclass/releases/flowers-v3-…",
     "model": "model_edgetpu.tflite", "backend": "edgetpu", "interpreter": "ai_edge_litert",
     "edgetpu_setting": "auto", "source": "camera /dev/video0 (640x480 @ 30 fps)", "resolution": "640x480"}

Times are Unix seconds. ``bundle_path`` is the *resolved* path of the bundle
that is classifying (not the ``current`` symlink), so a deploy can tell
whether the service really switched to the release it just installed;
``model``, ``backend`` ("cpu" or "edgetpu") and ``interpreter`` say what
classified the latest frame, ``edgetpu_setting`` what ``[model] edgetpu``
asks for, so a deploy can tell a Coral that is configured but not in use.
``source`` never carries URL credentials; ``resolution`` is the size of the
frames actually received (null before the first). ``results_lost`` counts
the result lines the results file could not take (a full disk: the run goes
on, see :class:`~edgeclass.device.outputs.stream.StreamOutput`). ``status`` is the line
``systemctl status`` shows (``waiting for camera: ...``,
``waiting for a bundle: ...``). Extra keys are allowed and shown by
``service status``.

Writes are atomic (:func:`edgeclass.device.files.atomic_write`) so a reader
never sees half a file. No fsync: the default location is
``/run`` (tmpfs), and on an SD card a flush every few seconds would only wear it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..errors import EdgeclassError
from ..files import atomic_write

DEFAULT_STATE_FILE = Path("/run/edgeclass/state.json")
# Keys the run loop writes; write_state does not insist on them (a starting
# service may not know its fps yet).
KEYS = ("pid", "started_at", "updated_at", "status", "fps", "label", "frames", "dropped", "reopens", "last_error",
        "bundle_name", "bundle_path", "model", "backend", "interpreter", "edgetpu_setting", "source", "resolution", "results_lost")


class StateError(EdgeclassError):
    """The state file is missing or unreadable."""


def write_state(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``state`` as JSON; sets ``updated_at`` (now) when absent."""
    data = dict(state)
    data.setdefault("updated_at", time.time())
    # World-readable: status is run by other users (the deploying user over ssh).
    atomic_write(path, json.dumps(data, default=str, separators=(",", ":")) + "\n")


def read_state(path: str | Path) -> dict[str, Any]:
    """The last state the service wrote; :class:`StateError` naming the file when there is none."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StateError(f"{path}: no state file (the service is not running, or uses another [service] state_file)") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot read the state file ({exc.strerror})") from None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{path}: not valid JSON ({exc}); the service rewrites it every few seconds") from None
    if not isinstance(state, dict):
        raise StateError(f"{path}: expected a JSON object, got {type(state).__name__}")
    return state

"""A real frame loop with the HTTP output on 127.0.0.1, and a small real HTTP client for the tests."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from edgeclass.device.outputs.http import HttpOutput
from edgeclass.device.pipeline.config import SourceConfig
from edgeclass.device.pipeline.loop import CaptureLoop, Runner
from edgeclass.device.pipeline.monitor import Monitor
from edgeclass.device.pipeline.verify import verify_bundle

from .conftest import colour_frame, write_video


class Reply(NamedTuple):
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def request(url: str, *, method: str = "GET", headers: dict | None = None, body: bytes | dict | None = None,
            timeout: float = 10) -> Reply:
    """One HTTP request with urllib; an error status is a reply, not an exception."""
    data = body
    headers = dict(headers or {})
    if isinstance(body, dict):
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def colour_cycle_video(path: Path, per_colour: int = 10, cycles: int = 1, size=(120, 160)) -> Path:
    """red, green, blue, ... frames: a scene whose colour (and so the model's answer) changes."""
    frames = [colour_frame(name, *size, seed=i) for _ in range(cycles) for name in ("red", "green", "blue")
              for i in range(per_colour)]
    return write_video(path, frames)


GREY = (128, 128, 128)  # no class's hue: the colour model spreads its score over all three (about 1/3 each)


def scene_change_video(path: Path, phases: list[tuple[str | tuple[int, int, int], float]], fps: float = 10.0) -> Path:
    """A video of ``(colour, seconds)`` phases at ``fps``: e.g. red (the model is sure) then grey (it is not)."""
    frames = [colour_frame(colour, seed=i) for colour, seconds in phases for i in range(round(seconds * fps))]
    return write_video(path, frames, fps=fps)


def wait_for(predicate, timeout: float = 10.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


class Served(NamedTuple):
    loop: object
    http: HttpOutput
    url: str


@contextmanager
def serving(video: Path, bundle: Path | None = None, *, fps: float | None = None, hooks=(), outputs=(),
            monitor_window: float | None = None, **http_options):
    """The frame loop on ``video`` (looping, paced like a camera) with an HTTP output on a free port.

    ``outputs`` run beside the HTTP output; ``monitor_window`` (seconds) shortens
    the monitor's rolling window (10 minutes in the field) so a test sees its
    baseline and a confidence drop within seconds.
    """
    http = HttpOutput("127.0.0.1:0", **http_options)
    source = SourceConfig(source=str(video), loop=True, realtime=True, fps=fps)
    if bundle is not None:
        loaded, classifier, _ = verify_bundle(bundle)
        loop = Runner(loaded, classifier, source, outputs=[http, *outputs])
        if monitor_window is not None:
            loop.monitor = Monitor(loaded.labels, window=monitor_window, uncertain_below=loop.monitor.uncertain_below,
                                   drop=loop.monitor.drop)
    else:
        loop = CaptureLoop(source, outputs=[http, *outputs])
    for hook in hooks:
        loop.add_status_hook(hook)
    thread = threading.Thread(target=loop.run, name="test-loop", daemon=True)
    thread.start()
    try:
        wait_for(lambda: http.hub.latest is not None)
        yield Served(loop, http, f"http://127.0.0.1:{http.port}")
    finally:
        loop.stop()
        thread.join(10)
        http.close()

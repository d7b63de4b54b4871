"""The HTTP output: what the frame loop sees of the live page (a reference to the newest frame, nothing more)."""

from __future__ import annotations

import logging
from pathlib import Path

from ...pipeline.decide import Decision
from ...pipeline.loop import FrameLoop, Output
from ...pipeline.sources import Frame
from .access import Access, access_for
from .config import HttpConfig

log = logging.getLogger(__name__)


class HttpOutput(Output):
    """Serves the live page, the API, the streams and ``/metrics`` while the loop runs.

    Built (and listening) before the loop starts, so a busy port or a missing
    token is a one-line error at once. :meth:`write` only hands the newest
    frame to the server's :class:`~.frames.FrameHub`. Tornado is imported
    here, not by the factory, so a device without ``[http]`` never loads it.
    """

    name = "http"
    sections = ("http", "uncertain")
    takes_frames_only = True  # `edgeclass collect --labels` shows frames without a model

    def __init__(self, listen: str, *, access: Access | None = None, stream_fps: float = 10.0, jpeg_quality: int = 80,
                 dataset: str | Path | None = None, uncertain_dir: str | Path | None = None,
                 labels: tuple[str, ...] | None = None) -> None:
        from ..dataset import Dataset
        from .frames import FrameHub
        from .server import HttpServer, Site

        self.hub = FrameHub(stream_fps, jpeg_quality)
        self.site = Site(self.hub, access or Access(None), dataset=None if dataset is None else Dataset(dataset),
                         uncertain_dir=None if uncertain_dir is None else Path(uncertain_dir), labels=labels)
        self.server = HttpServer(listen, self.site)
        log.info("live page on http://%s/%s", self.server.address,
                 " (needs the access token)" if self.site.access.required else "")

    @classmethod
    def from_config(cls, config) -> "HttpOutput | None":
        h: HttpConfig = config.http
        if h.listen is None:
            return None
        return cls(h.listen, access=access_for(h.listen, h.token_file), stream_fps=h.stream_fps,
                   jpeg_quality=min(100, h.jpeg_quality), dataset=h.dataset, uncertain_dir=config.uncertain.dir)

    @property
    def port(self) -> int:
        """The port it listens on (the real one when ``listen`` asked for port 0)."""
        return self.server.port

    def reconfigure(self, config) -> bool:
        """Apply a reloaded ``[http]``/``[uncertain]`` in place (open pages stay connected); False when now off.

        Everything is checked before anything changes, so a refused setting
        leaves the server as it was.
        """
        from ..dataset import Dataset

        h: HttpConfig = config.http
        if h.listen is None:
            return False
        access = access_for(h.listen, h.token_file)
        dataset = None if h.dataset is None else Dataset(h.dataset)
        if h.listen != self.server.listen:
            self.server.relisten(h.listen)
        site = self.site
        site.access, site.dataset = access, dataset
        site.uncertain_dir = None if config.uncertain.dir is None else Path(config.uncertain.dir)
        self.hub.max_fps, self.hub.quality = h.stream_fps, min(100, h.jpeg_quality)
        log.info("live page on http://%s/ with the new settings", self.server.address)
        return True

    def start(self, run: FrameLoop) -> None:
        self.site.run = run

    def write(self, frame: Frame, decision: Decision | None) -> None:
        self.hub.publish(frame, decision)

    def close(self) -> None:
        self.server.close()

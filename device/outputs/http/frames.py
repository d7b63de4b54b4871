"""The newest frame for viewers: handed over by the frame loop, encoded to JPEG only while someone watches.

The frame loop pays one attribute assignment per frame (:meth:`FrameHub.publish`
keeps a reference to the newest frame and decision; frames are never modified
after capture, so no copy is needed). Everything else happens in the HTTP
server's thread and one encoder thread:

- while at least one MJPEG viewer is connected, the encoder takes the newest
  frame at most ``max_fps`` times a second, encodes it once, and every viewer
  gets the same bytes; with no viewer nothing is encoded at all;
- a snapshot encodes the newest frame on request (or reuses the stream's
  JPEG of that same frame);
- decision changes are pushed to Server-Sent-Events subscribers, built in the
  loop's thread only when someone is subscribed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import numpy as np

from ...pipeline.decide import Decision
from ...pipeline.sources import Frame
from ..stream import result_record

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 16  # decision changes buffered per slow SSE client before the oldest is dropped


class Latest(NamedTuple):
    """The newest frame handed over by the loop, numbered."""

    seq: int
    frame: Frame
    decision: Decision | None


class Jpeg(NamedTuple):
    seq: int  # the Latest.seq it was encoded from
    data: bytes
    encoded_at: float  # monotonic


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """An RGB frame as JPEG bytes (OpenCV releases the GIL while it encodes)."""
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode the frame as JPEG")
    return data.tobytes()


class FrameHub:
    """Between the frame loop (:meth:`publish`) and the server's event loop (everything async)."""

    def __init__(self, max_fps: float = 10.0, quality: int = 80) -> None:
        self.max_fps = max_fps
        self.quality = quality
        self.latest: Latest | None = None
        self.viewers = 0
        self.encoded = 0  # JPEG frames encoded for viewers (a test reads it to see nothing is encoded unwatched)
        self._jpeg: Jpeg | None = None
        self._subscribers: set[asyncio.Queue] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None
        self._watched: asyncio.Event | None = None
        self._encoder_task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="edgeclass-http-jpeg")
        self._seq = 0
        self.closed = False

    # -- the frame loop's side ----------------------------------------------------

    def publish(self, frame: Frame, decision: Decision | None) -> None:
        """The newest frame (called in the frame loop's thread: microseconds)."""
        self._seq += 1
        self.latest = Latest(self._seq, frame, decision)
        if decision is not None and decision.changed and self._subscribers and self._loop is not None:
            record = result_record("change", frame, decision)
            self._loop.call_soon_threadsafe(self._broadcast, record)

    # -- the server's side (its event loop) --------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's event loop and start the encoder (call in that loop)."""
        self._loop = loop
        self._changed = asyncio.Condition()
        self._watched = asyncio.Event()
        self._encoder_task = loop.create_task(self._encode_while_watched())

    async def detach(self) -> None:
        """Stop the encoder and end every viewer's stream and subscription (call in the event loop)."""
        self.closed = True
        if self._encoder_task is not None:
            self._encoder_task.cancel()
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
        self._broadcast(None)  # None = the end, for every subscriber
        self._pool.shutdown(wait=False)

    async def frames(self):
        """Async iterator of JPEG bytes for one viewer, as fast as the encoder produces them."""
        self.viewers += 1
        self._watched.set()
        try:
            seen = -1
            while True:
                async with self._changed:
                    await self._changed.wait_for(
                        lambda: self.closed or (self._jpeg is not None and self._jpeg.seq != seen))
                    jpeg = self._jpeg
                if self.closed:
                    return
                seen = jpeg.seq
                yield jpeg.data
        finally:
            self.viewers -= 1
            if self.viewers == 0:
                self._watched.clear()

    async def snapshot(self) -> bytes | None:
        """The newest frame as JPEG (None before the first frame)."""
        latest = self.latest
        if latest is None:
            return None
        jpeg = self._jpeg
        if jpeg is not None and jpeg.seq == latest.seq:
            return jpeg.data
        return await self.run_in_encoder(encode_jpeg, latest.frame.rgb, self.quality)

    async def run_in_encoder(self, fn: Callable, *args):
        """Run ``fn(*args)`` in the encoder thread (image work that must not hold up the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def _broadcast(self, record: dict | None) -> None:
        for queue in list(self._subscribers):
            if queue.full():  # a slow client loses the oldest change, never holds up the others
                queue.get_nowait()
            queue.put_nowait(record)

    async def _encode_while_watched(self) -> None:
        while True:
            await self._watched.wait()
            period = 1.0 / self.max_fps
            started = time.monotonic()
            latest = self.latest
            if latest is not None and (self._jpeg is None or self._jpeg.seq != latest.seq):
                try:
                    data = await self.run_in_encoder(encode_jpeg, latest.frame.rgb, self.quality)
                except RuntimeError as exc:
                    log.warning("live view: %s", exc)
                else:
                    self.encoded += 1
                    async with self._changed:
                        self._jpeg = Jpeg(latest.seq, data, time.monotonic())
                        self._changed.notify_all()
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

"""A real network camera on 127.0.0.1: multipart MJPEG over HTTP, as IP cameras and ESP32-CAMs serve it.

OpenCV (FFmpeg's mpjpeg demuxer) reads it like any camera URL, so the device
code under test is the production path for ``http://`` sources. What the
camera shows is a function of the frame number, so a test can make it go
dark, freeze on one picture, or stream sensor-like noise; it can also insist
on HTTP basic authentication, so credentials in the URL are really used.
"""

from __future__ import annotations

import base64
import http.server
import threading
import time
from typing import Callable

import cv2
import numpy as np

BOUNDARY = b"frame"


def noisy(level: int, seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    """An RGB picture of sensor-like noise in 0..level-1 (level 14: a dark night scene)."""
    return np.random.default_rng(seed).integers(0, level, (height, width, 3), np.uint8)


class MJPEGCamera:
    """Serves ``picture(i)`` for i = 0, 1, 2, ... at ``fps``; the count continues across connections."""

    def __init__(self, picture: Callable[[int], np.ndarray], fps: float = 30.0,
                 auth: tuple[str, str] | None = None, quality: int = 90) -> None:
        self.picture, self.fps, self.auth, self.quality = picture, fps, auth, quality
        self.sent = 0
        self.connections = 0
        self.refused = 0  # requests without the right credentials
        self._lock = threading.Lock()
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                camera._serve(self)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        user = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        return f"http://{user}127.0.0.1:{self._server.server_port}/stream.mjpg"

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        if self.auth is not None:
            expected = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            if handler.headers.get("Authorization") != expected:
                with self._lock:
                    self.refused += 1
                handler.send_response(401)
                handler.send_header("WWW-Authenticate", 'Basic realm="camera"')
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
        with self._lock:
            self.connections += 1
        handler.send_response(200)
        handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        handler.end_headers()
        next_at = time.monotonic()
        try:
            while True:
                with self._lock:
                    i, self.sent = self.sent, self.sent + 1
                rgb = self.picture(i)
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                        [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                data = jpeg.tobytes()
                handler.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                    + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                next_at += 1.0 / self.fps
                time.sleep(max(0.0, next_at - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader went away (closed or reopened)

    def __enter__(self) -> "MJPEGCamera":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

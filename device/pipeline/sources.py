"""Frame sources: cameras, streams, video files and image folders, all as RGB frames.

Every source is a small :class:`FrameSource` (a context manager) that yields
:class:`Frame` tuples of HxWx3 uint8 **RGB** pixels; :func:`open_source` picks
the implementation from a command-line string. Sources are single-threaded and
blocking on purpose: :class:`edgeclass.device.capture.FrameGrabber` runs one in
its own thread and handles stalls, reopening and dropping old frames, so the
code here stays about pixels and one-line error messages.

A source object can be opened again after :meth:`FrameSource.close`, but the
grabber asks its factory for a fresh one on every reopen, so a source whose
``read()`` is stuck in a driver is never shared with its replacement.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import ImageError, SourceError, SourceMissing
from .images import list_images, load_image

log = logging.getLogger(__name__)

PICAMERA2_MISSING = (
    "picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install python3-picamera2' "
    "and create the venv with --system-site-packages"
)
DEFAULT_CAMERA_SIZE = (640, 480)
# FFmpeg waits 30 s by default before giving up on a dead network camera; the
# grabber's stall timeout is the real guard, these only bound a single call.
STREAM_OPEN_TIMEOUT_MS = 10_000
STREAM_READ_TIMEOUT_MS = 5_000
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# scheme://user:password@host -> scheme://***@host (anywhere in a text). Up to the
# *last* "@" before the path: people write passwords with an unescaped "@".
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s]*)@")


def redact(text: str) -> str:
    """``text`` with the user name and password of any URL in it replaced by ``***``.

    Camera URLs carry credentials (``rtsp://admin:secret@cam/stream``); every
    log line, error, ``STATUS=`` and state file names the source through this.
    """
    return _USERINFO.sub(lambda m: f"{m['scheme']}***@", str(text))


class Frame(NamedTuple):
    """One captured picture."""

    rgb: np.ndarray  # HxWx3 uint8 RGB, C-contiguous
    timestamp: float  # time.time() when captured (for people: it can jump)
    index: int  # 0, 1, 2, ... per frame read from this source
    monotonic: float = 0.0  # time.monotonic() when captured (for latencies: it never jumps)


class FrameSource(ABC):
    """A camera, stream, file or folder; ``with source:`` opens and closes it."""

    live: bool = False  # True: drop old frames and keep the newest; False: every frame, in order
    # True: pictures come from a sensor, whose noise makes two byte-identical
    # frames impossible, so repeats mean it froze. Files and folders repeat
    # legitimately (a still shot, a loop), so they are exempt.
    from_sensor: bool = False
    description: str = ""  # for logs; filled in with real sizes by open()

    def __init__(self) -> None:
        self._next_index = 0

    @abstractmethod
    def open(self) -> None:
        """Acquire the device or file; raise :class:`SourceError` naming it on failure."""

    @abstractmethod
    def read(self) -> Frame | None:
        """Block for the next frame; ``None`` at the clean end of a file or folder."""

    @abstractmethod
    def close(self) -> None:
        """Release the device or file; safe to call twice or before open()."""

    def position(self) -> object | None:
        """Where reading got to, for :meth:`resume` on a fresh source of the same file or folder.

        ``None`` when there is nothing to resume: a camera or a stream (what it
        sends next is new anyway), a named pipe (its writer starts afresh).
        """
        return None

    def resume(self, position: object) -> None:
        """Just after :meth:`open`: skip what an earlier source of the same file already delivered.

        The capture thread replaces a failed or stalled source with a fresh one;
        without this, a video or folder would start again from its first frame
        and frames already classified would be classified again.
        """

    def _frame(self, rgb: np.ndarray) -> Frame:
        frame = Frame(rgb, time.time(), self._next_index, time.monotonic())
        self._next_index += 1
        return frame

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


def _cv2():
    try:
        import cv2
    except ImportError:  # pragma: no cover - depends on the install
        raise SourceError(
            "OpenCV is not installed: pip install 'edgeclass[device]' (opencv-python-headless)"
        ) from None
    if "OPENCV_LOG_LEVEL" not in os.environ:
        # OpenCV's own WARN lines ("can't open camera by index") repeat what
        # our one-line errors already say, on every retry.
        logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
        if logging_api is not None:
            logging_api.setLogLevel(logging_api.LOG_LEVEL_ERROR)
    return cv2


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or gray, or BGRA) frame as a new C-contiguous RGB array."""
    cv2 = _cv2()
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB)


def _fps_text(fps: float) -> str:
    return f"{fps:g} fps" if fps and fps > 0 else "fps unknown"


class OpenCVCamera(FrameSource):
    """A V4L2 camera (index or ``/dev/videoN``) or a network stream, read through OpenCV."""

    live = True
    from_sensor = True

    def __init__(
        self,
        target: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
    ) -> None:
        super().__init__()
        self.target = target
        self.size = (width, height)
        self.fps = fps
        self.is_stream = isinstance(target, str) and bool(_URL.match(target))
        if isinstance(target, int):
            self.name = f"camera {target}"
        elif self.is_stream:
            self.name = f"stream {redact(target)}"
        else:
            self.name = f"camera {target}"
        self.description = self.name
        self._cap = None

    def open(self) -> None:
        cv2 = _cv2()
        self.close()
        if isinstance(self.target, str) and not self.is_stream and not os.path.exists(self.target):
            raise SourceMissing(f"{self.name}: no such device (is the camera plugged in? see 'ls /dev/video*' "
                                "and 'ls -l /dev/v4l/by-id')")
        if self.is_stream:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_OPEN_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_READ_TIMEOUT_MS,
            ]  # fmt: skip
            cap = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        else:
            # V4L2 explicitly: CAP_ANY would also try FFmpeg on a device path.
            api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            cap = cv2.VideoCapture(self.target, api)
        if not cap.isOpened():
            cap.release()
            if self.is_stream:
                raise SourceError(f"{self.name}: cannot open (unreachable, wrong URL or unsupported format)")
            raise SourceError(
                f"{self.name}: cannot open (no such camera, or in use by another program; "
                "list cameras with 'v4l2-ctl --list-devices')"
            )
        width, height = self.size
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        # One driver buffer: a slow reader must not see frames from seconds ago.
        # Not every backend supports it (FFmpeg streams ignore it); the grabber's
        # newest-frame slot is the guarantee, this only trims driver latency.
        if not cap.set(cv2.CAP_PROP_BUFFERSIZE, 1):
            log.debug("%s: backend %s ignores CAP_PROP_BUFFERSIZE", self.name, cap.getBackendName())
        self._cap = cap
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.description = f"{self.name} ({w}x{h} @ {_fps_text(cap.get(cv2.CAP_PROP_FPS))})"

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.name}: read before open")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            # A camera or stream has no clean end: no frame means lost or stalled.
            raise SourceError(f"{self.name}: no frame received (disconnected, stalled or stream ended)")
        return self._frame(bgr_to_rgb(bgr))

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class _Pacer:
    """Sleeps so frames come out at ``fps``, like a camera (for ``realtime`` files)."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.next_at: float | None = None

    def wait(self) -> None:
        now = time.monotonic()
        if self.next_at is None or now - self.next_at > 1.0:  # first frame, or far behind: resync
            self.next_at = now
        elif self.next_at > now:
            time.sleep(self.next_at - now)
        self.next_at += self.period


class VideoFile(FrameSource):
    """A video file (anything FFmpeg decodes), or a named pipe carrying one."""

    def __init__(self, path: str | Path, *, loop: bool = False, realtime: bool = False, fps: float | None = None):
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        self.live = realtime  # paced at its frame rate, a file behaves like a camera
        self.name = f"video file {self.path}"
        self.description = self.name
        self._fps_override = fps
        self._cap = None
        self._pending = None  # first frame, decoded by open() to prove the file is readable
        self._pacer: _Pacer | None = None
        self._frames_in_pass = 0
        self._frame_count = 0
        self._regular = False  # a regular file can be resumed; a named pipe cannot

    def _open_capture(self) -> None:
        cv2 = _cv2()
        if not self.path.exists():
            raise SourceMissing(f"{self.name}: no such file")
        if self.path.is_dir():
            raise SourceError(f"{self.name}: is a directory")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: not a readable video (empty, corrupt or unsupported format)")
        ok, bgr = cap.read()
        if not ok or bgr is None:
            cap.release()
            raise SourceError(f"{self.name}: no decodable frame (corrupt or unsupported codec)")
        self._cap, self._pending, self._frames_in_pass = cap, bgr, 0
        self._frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        self._regular = self.path.is_file()

    def open(self) -> None:
        cv2 = _cv2()
        self.close()
        self._open_capture()
        cap = self._cap
        fps = self._fps_override or cap.get(cv2.CAP_PROP_FPS)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        frames = f", {self._frame_count} frames" if self._frame_count else ""
        extra = ", looping" if self.loop else ""
        extra += ", paced in real time" if self.live else ""
        self.description = f"{self.name} ({w}x{h} @ {_fps_text(fps)}{frames}{extra})"
        self._pacer = _Pacer(fps if fps and fps > 0 else 30.0) if self.live else None

    def _warn_if_cut_short(self) -> None:
        # FRAME_COUNT comes from the container header (or duration x fps), so a
        # clear shortfall means the data ends early: truncated or corrupt.
        missing = self._frame_count - self._frames_in_pass
        if self._frame_count and missing > max(2, self._frame_count // 50):
            log.warning(
                "%s: ended after %d of %d frames (truncated or corrupt); %s",
                self.name, self._frames_in_pass, self._frame_count,
                "starting again from the beginning" if self.loop else "stopping here",
            )  # fmt: skip

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.name}: read before open")
        if self._pending is not None:
            bgr, self._pending = self._pending, None
        else:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                self._warn_if_cut_short()
                if not self.loop:
                    return None
                self._cap.release()
                self._cap = None
                # Reopen rather than seek: seeking is unreliable in some codecs, and a
                # file replaced or deleted meanwhile must fail here, not loop on nothing.
                self._open_capture()
                bgr, self._pending = self._pending, None
        self._frames_in_pass += 1
        if self._pacer is not None:
            self._pacer.wait()
        return self._frame(bgr_to_rgb(bgr))

    def position(self) -> int | None:
        """Frames read in the current pass (a loop starts a new pass)."""
        return self._frames_in_pass if self._regular else None

    def resume(self, position: object) -> None:
        skip = int(position or 0)
        if self._cap is None or skip <= 0:
            return
        self._pending = None  # open() decoded frame 1 of the pass: it is among those skipped
        done = 1
        # grab() demuxes without converting pixels; seeking (CAP_PROP_POS_FRAMES)
        # lands on the wrong frame in some codecs. A file now shorter than
        # ``skip`` just ends (or starts its next pass) on the next read.
        while done < skip and self._cap.grab():
            done += 1
        self._frames_in_pass = done

    def close(self) -> None:
        cap, self._cap, self._pending = self._cap, None, None
        if cap is not None:
            cap.release()


class ImageFolder(FrameSource):
    """Every image under a folder (recursive, sorted by path), one frame each."""

    def __init__(self, path: str | Path, *, loop: bool = False, realtime: bool = False, fps: float | None = None):
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        self.live = realtime
        self.name = f"image folder {self.path}"
        self.description = self.name
        self._fps = fps or 5.0
        self._images: list[Path] = []
        self._bad: set[Path] = set()  # undecodable files: logged once, skipped on later loops
        self._pos = 0
        self._pacer: _Pacer | None = None
        self._opened = False
        self._last_path: Path | None = None

    def open(self) -> None:
        if not self.path.is_dir():
            if not self.path.exists():
                raise SourceMissing(f"{self.name}: no such folder")
            raise SourceError(f"{self.name}: not a folder")
        try:
            listing = list_images([self.path])
        except ImageError as exc:
            raise SourceError(f"{self.name}: {exc}") from None
        if listing.skipped:
            names = ", ".join(p.name for p in listing.skipped[:5]) + (", ..." if len(listing.skipped) > 5 else "")
            log.warning("%s: skipping %d non-image files (%s)", self.name, len(listing.skipped), names)
        if not listing.images:
            raise SourceError(f"{self.name}: no image files found (expected .jpg, .png, .bmp, ...)")
        self._images, self._pos, self._opened = listing.images, 0, True
        extra = ", looping" if self.loop else ""
        extra += f", paced at {self._fps:g} fps" if self.live else ""
        self.description = f"{self.name} ({len(listing.images)} images{extra})"
        self._pacer = _Pacer(self._fps) if self.live else None

    def read(self) -> Frame | None:
        if not self._opened:
            raise SourceError(f"{self.name}: read before open")
        scanned = 0  # images tried since the last good one: a loop over only bad files must stop
        while True:
            if self._pos >= len(self._images):
                if not self.loop:
                    return None
                self._pos = 0
            if scanned >= len(self._images):
                raise SourceError(f"{self.name}: none of the {len(self._images)} images can be decoded")
            path = self._images[self._pos]
            self._pos += 1
            scanned += 1
            if path in self._bad:
                continue
            try:
                rgb = load_image(path)
            except ImageError as exc:
                self._bad.add(path)
                log.warning("%s: skipping %s", self.name, exc)
                continue
            if self._pacer is not None:
                self._pacer.wait()
            self._last_path = path
            return self._frame(rgb)

    def position(self) -> Path | None:
        """The last image read: a fresh listing resumes after it (even if files were added or removed)."""
        return self._last_path

    def resume(self, position: object) -> None:
        if isinstance(position, Path) and self._opened:
            self._pos = bisect.bisect_right(self._images, position)
            self._last_path = position

    def close(self) -> None:
        self._opened = False


# picamera2's format names are libcamera's DRM fourccs, which name the bits of a
# little-endian word, so the bytes in memory run the other way round. From the
# picamera2 manual: RGB888 is [B, G, R] per pixel, BGR888 [R, G, B], XRGB8888
# [B, G, R, 255], XBGR8888 [R, G, B, 255]. Value: (bytes per pixel, cvtColor code to RGB).
PICAMERA2_FORMATS: dict[str, tuple[int, str | None]] = {
    "RGB888": (3, "COLOR_BGR2RGB"),
    "BGR888": (3, None),
    "XRGB8888": (4, "COLOR_BGRA2RGB"),
    "XBGR8888": (4, "COLOR_RGBA2RGB"),
}


class Picamera2Camera(FrameSource):
    """A Raspberry Pi camera through picamera2/libcamera (imported only when opened).

    ``pixel_format``: the main stream's format to ask for, ``RGB888`` (3 bytes a
    pixel) or ``XRGB8888`` (4; what many camera configurations and the Pi 5's
    ISP prefer), or their ``BGR888``/``XBGR8888`` twins. libcamera may adjust
    the request; frames are converted from the format actually configured.
    """

    live = True
    from_sensor = True

    def __init__(self, camera_num: int = 0, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, pixel_format: str = "RGB888") -> None:  # fmt: skip
        super().__init__()
        if pixel_format not in PICAMERA2_FORMATS:
            raise SourceError(f"picamera2 format {pixel_format!r}: expected one of {', '.join(PICAMERA2_FORMATS)}")
        self.camera_num = camera_num
        w, h = width or DEFAULT_CAMERA_SIZE[0], height or DEFAULT_CAMERA_SIZE[1]
        self.size = (w - w % 2, h - h % 2)  # libcamera refuses odd sizes
        self.fps = fps
        self.pixel_format = pixel_format
        self.name = f"picamera2 camera {camera_num}"
        self.description = self.name
        self._cam = None
        self._layout: tuple[int, str | None] = PICAMERA2_FORMATS[pixel_format]

    def open(self) -> None:
        self.close()
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            if exc.name in (None, "picamera2"):
                raise SourceError(PICAMERA2_MISSING) from None
            # The PyPI wheel imports but needs libcamera, which only the OS package brings.
            raise SourceError(f"picamera2 cannot be imported ({exc}): {PICAMERA2_MISSING.split(': ', 1)[1]}") from None
        try:
            cam = Picamera2(self.camera_num)
        except Exception as exc:  # picamera2 raises RuntimeError/IndexError with varying texts
            raise SourceError(
                f"{self.name}: cannot open ({exc}); check the ribbon cable and 'rpicam-hello --list-cameras'"
            ) from None
        try:
            controls = {}
            if self.fps:
                frame_us = int(round(1_000_000 / self.fps))
                controls["FrameDurationLimits"] = (frame_us, frame_us)
            config = cam.create_video_configuration(
                main={"size": self.size, "format": self.pixel_format}, controls=controls, display=None, encode=None
            )
            cam.configure(config)
            # libcamera may have adjusted the request: read() follows what was configured.
            main = getattr(cam, "camera_config", None) or {}
            main = main.get("main", {}) if isinstance(main, dict) else {}
            negotiated = main.get("format", self.pixel_format)
            if negotiated not in PICAMERA2_FORMATS:
                raise ValueError(f"the camera delivers {negotiated}, expected one of {', '.join(PICAMERA2_FORMATS)}")
            cam.start()
        except Exception as exc:
            cam.close()
            raise SourceError(f"{self.name}: cannot start at {self.size[0]}x{self.size[1]} ({exc})") from None
        self._cam, self._layout = cam, PICAMERA2_FORMATS[negotiated]
        try:
            w, h = main["size"]
        except (KeyError, TypeError, ValueError):
            w, h = self.size
        fps = f" @ {self.fps:g} fps" if self.fps else ""
        self.description = f"{self.name} ({w}x{h} {negotiated}{fps})"

    def read(self) -> Frame | None:
        if self._cam is None:
            raise SourceError(f"{self.name}: read before open")
        try:
            array = self._cam.capture_array("main")
        except Exception as exc:
            raise SourceError(f"{self.name}: capture failed ({exc})") from None
        channels, code = self._layout
        if array is None or array.ndim != 3 or array.shape[2] != channels:
            shape = None if array is None else array.shape
            raise SourceError(f"{self.name}: capture returned shape {shape}, expected HxWx{channels}")
        # picamera2 hands out a view of the camera buffer whose rows may be padded
        # (stride): cvtColor reads it as it is and writes a fresh, packed RGB array.
        if code is None:
            return self._frame(np.array(array, order="C"))  # a copy: the frame outlives the buffer
        return self._frame(_cv2().cvtColor(array, getattr(_cv2(), code)))

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for step in (cam.stop, cam.close):
            try:
                step()
            except Exception as exc:  # a dying camera must not stop the rest of the shutdown
                log.debug("%s: %s() failed: %s", self.name, step.__name__, exc)


def open_source(
    spec: str | int | os.PathLike,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    loop: bool = False,
    realtime: bool = False,
) -> FrameSource:
    """Choose the :class:`FrameSource` for a command-line source string (not opened yet).

    ``0``/``"0"`` camera index; ``/dev/videoN``, ``/dev/v4l/by-id/...`` and any other
    camera path or link into ``/dev`` (present or not yet); ``rtsp://``, ``http(s)://``
    and other URLs (live streams); ``picamera2`` or ``picamera2:N``; an existing folder
    (images); an existing file or named pipe (video). A path that does not exist
    (yet) and is not a camera raises :class:`SourceMissing`. ``width``/``height``/``fps`` are requests
    to cameras; ``loop`` replays files and folders forever; ``realtime`` paces them at
    their frame rate (or ``fps``) and marks them live, to rehearse a camera.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise SourceError(f"source {redact(repr(spec))}: expected a camera index, device, URL, file or folder")
    text = str(spec).strip()
    camera = {"width": width, "height": height, "fps": fps}
    if isinstance(spec, int) or text.isdigit():
        return OpenCVCamera(int(text), **camera)
    if text == "picamera2" or text.startswith("picamera2:"):
        num = text.partition(":")[2] or "0"
        if not num.isdigit():
            raise SourceError(f"source {text!r}: expected 'picamera2' or 'picamera2:N' with a camera number N")
        return Picamera2Camera(int(num), **camera)
    if _URL.match(text):
        return OpenCVCamera(text, **camera)
    path = Path(text).expanduser()
    if _is_camera_path(text, path):
        return OpenCVCamera(text, **camera)
    if path.is_dir():
        return ImageFolder(path, loop=loop, realtime=realtime, fps=fps)
    if path.exists():
        return VideoFile(path, loop=loop, realtime=realtime, fps=fps)
    # Absent *now*: a link that udev, a mount or another program has not made
    # yet. SourceMissing lets a run that waits for its source try again.
    raise SourceMissing(
        f"source {redact(repr(text))}: no such file or folder (expected a camera index, /dev/videoN, "
        "a stream URL, 'picamera2', a video file or an image folder)"
    )


def _is_camera_path(text: str, path: Path) -> bool:
    """Whether a path names a V4L2 camera, decided without needing it to exist.

    A camera's stable names (``/dev/v4l/by-id/...``, ``/dev/v4l/by-path/...``,
    a udev ``SYMLINK+=`` name) are symlinks that exist only while the camera
    is plugged in, so at boot they are absent: anything under ``/dev/`` that
    is not there yet, and any symlink that resolves into ``/dev/``, is a camera
    still to come. A path that exists is what it is (a character device is a
    camera; a FIFO or file under ``/dev/fd/`` is a video).
    """
    if text.startswith(("/dev/video", "/dev/v4l/")):
        return True
    if path.exists():
        return path.is_char_device()
    # realpath follows every link that exists, so a dangling link shows its target.
    return os.path.realpath(path).startswith("/dev/")

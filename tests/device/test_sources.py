"""Frame sources against real artefacts: videos written with OpenCV, image folders,
a real HTTP stream, missing cameras. Only picamera2 is faked (no Pi camera or
libcamera can exist on this machine)."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import socket
import sys
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeclass.device.errors import SourceError, SourceMissing
from edgeclass.device.pipeline.sources import (
    PICAMERA2_MISSING,
    Frame,
    ImageFolder,
    OpenCVCamera,
    Picamera2Camera,
    VideoFile,
    open_source,
    redact,
)

from .conftest import write_video as write_bgr_video

W, H = 64, 48


def red_blue_bgr(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Left half red, right half blue (written as BGR), with a little per-frame noise."""
    rng = np.random.default_rng(i)
    bgr = np.zeros((h, w, 3), np.uint8)
    bgr[:, : w // 2] = (0, 0, 220)
    bgr[:, w // 2 :] = (220, 0, 0)
    return np.clip(bgr.astype(int) + rng.integers(0, 20, bgr.shape), 0, 255).astype(np.uint8)


write_video = functools.partial(write_bgr_video, rgb=False)  # these tests build OpenCV BGR frames


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_video(tmp_path / "clip.avi", (red_blue_bgr(i) for i in range(20)))


def read_all(source, limit: int = 1000) -> list[Frame]:
    frames = []
    while len(frames) < limit:
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    return frames


def assert_rgb_frame(frame: Frame, h: int = H, w: int = W) -> None:
    assert frame.rgb.shape == (h, w, 3) and frame.rgb.dtype == np.uint8
    assert frame.rgb.flags.c_contiguous
    left, right = frame.rgb[h // 2, w // 4].astype(int), frame.rgb[h // 2, 3 * w // 4].astype(int)
    assert left[0] > 180 and left[2] < 60, f"left half should be red in RGB, got {left}"
    assert right[2] > 180 and right[0] < 60, f"right half should be blue in RGB, got {right}"


# -- video files ----------------------------------------------------------------


def test_video_file_every_frame_in_order_as_rgb(clip):
    source = open_source(str(clip))
    assert isinstance(source, VideoFile) and not source.live
    before = time.time()
    with source:
        assert "clip.avi" in source.description and "64x48" in source.description and "20 frames" in source.description
        frames = read_all(source)
        assert source.read() is None  # stays ended
    assert [f.index for f in frames] == list(range(20))
    for frame in frames:
        assert_rgb_frame(frame)
    stamps = [f.timestamp for f in frames]
    assert before <= stamps[0] and stamps == sorted(stamps)


def test_video_file_loop_replays_with_continuing_indices(clip):
    with open_source(clip, loop=True) as source:
        frames = [source.read() for _ in range(50)]
    assert [f.index for f in frames] == list(range(50))
    assert np.array_equal(frames[0].rgb, frames[20].rgb)  # same picture, new frame


def test_video_file_reopens_after_close(clip):
    source = open_source(clip)
    with source:
        first = source.read()
    source.close()  # idempotent
    with source:
        again = source.read()
    assert np.array_equal(first.rgb, again.rgb)


@pytest.mark.parametrize("content", [b"", os.urandom(4000), b"RIFF\x00\x00\x00\x00AVI LIST" + os.urandom(500)])
def test_unreadable_video_file_is_a_source_error_naming_it(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    source = open_source(bad)
    with pytest.raises(SourceError, match="broken.mp4"):
        source.open()
    source.close()


def test_missing_path_is_a_source_error_naming_it(tmp_path):
    # SourceMissing (not just SourceError): a run that waits for its source retries it.
    with pytest.raises(SourceMissing, match="nothere.mp4"):
        open_source(str(tmp_path / "nothere.mp4"))
    # A file that disappears between choosing and opening the source.
    with pytest.raises(SourceMissing, match=r"gone\.avi: no such file"):
        VideoFile(tmp_path / "gone.avi").open()
    with pytest.raises(SourceMissing, match=r"gone: no such folder"):
        ImageFolder(tmp_path / "gone").open()
    # Present but unreadable is not "missing": it will not fix itself.
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(SourceError) as info:
        open_source(tmp_path / "empty.avi").open()
    assert not isinstance(info.value, SourceMissing)


def test_truncated_video_ends_early_with_a_warning(tmp_path, clip, caplog):
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="edgeclass.device.pipeline.sources"):
        with open_source(cut) as source:
            frames = read_all(source)
    assert 3 < len(frames) < 20
    assert any("cut.avi" in r.message and "ended after" in r.message for r in caplog.records)


def test_video_truncated_while_being_read(tmp_path, caplog):
    # Noise frames compress badly (~60 KB each), so FFmpeg's read-ahead buffer
    # cannot have swallowed the rest of the file before we cut it.
    rng = np.random.default_rng(0)
    path = write_video(tmp_path / "live.avi", (rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(30)))
    with caplog.at_level(logging.WARNING, logger="edgeclass.device.pipeline.sources"):
        with open_source(path) as source:
            head = [source.read() for _ in range(3)]
            os.truncate(path, path.stat().st_size // 3)
            rest = read_all(source)
    total = len(head) + len(rest)
    assert 3 <= total < 20, total
    assert any("live.avi" in r.message and "ended after" in r.message for r in caplog.records)


def test_video_deleted_while_being_read(tmp_path, clip):
    # Unlinking keeps the open inode: this pass finishes; a loop cannot start again.
    with open_source(clip, loop=True) as source:
        first = [source.read() for _ in range(5)]
        clip.unlink()
        rest = [source.read() for _ in range(15)]
        assert [f.index for f in first + rest] == list(range(20))
        with pytest.raises(SourceError, match=r"clip\.avi: no such file"):
            source.read()


def test_realtime_file_is_live_and_paced(clip):
    source = open_source(clip, realtime=True, fps=100)
    assert source.live
    with source:
        start = time.monotonic()
        frames = read_all(source)
        took = time.monotonic() - start
    assert len(frames) == 20
    assert took >= 0.15  # 19 periods of 10 ms, minus sleep granularity


# -- image folders --------------------------------------------------------------


def test_image_folder_sorted_skips_and_logs_bad_files(tmp_path, caplog):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "sub/c.bmp"):
        cv2.imwrite(str(folder / name), red_blue_bgr(1))
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with caplog.at_level(logging.WARNING, logger="edgeclass.device.pipeline.sources"):
        source = open_source(folder, loop=True)
        assert isinstance(source, ImageFolder)
        with source:
            frames = [source.read() for _ in range(6)]
    assert [f.index for f in frames] == list(range(6))
    for frame in frames:
        assert_rgb_frame(frame)
    messages = [r.message for r in caplog.records]
    assert sum("notes.txt" in m for m in messages) == 1
    assert sum("broken.jpg" in m for m in messages) == 1  # once, though looped twice
    assert "3 images" in source.description or "4 images" in source.description


def test_image_folder_ends_without_loop(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), red_blue_bgr(i))
    with open_source(tmp_path) as source:
        assert len(read_all(source)) == 3


def test_image_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(SourceError, match="no image files"):
        open_source(tmp_path).open()


def test_image_folder_of_only_broken_images_fails_instead_of_spinning(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"nope")
    with open_source(tmp_path, loop=True) as source:
        with pytest.raises(SourceError, match="none of the 1 images"):
            source.read()


# -- OpenCV cameras and streams -------------------------------------------------


@pytest.mark.parametrize("spec", [97, "97", "/dev/video97"])
def test_camera_that_does_not_exist_fails_fast_and_clearly(spec):
    source = open_source(spec)
    assert isinstance(source, OpenCVCamera) and source.live
    start = time.monotonic()
    with pytest.raises(SourceError, match="97"):
        source.open()
    assert time.monotonic() - start < 5
    source.close()


@pytest.mark.parametrize("spec", [
    "/dev/v4l/by-id/usb-Absent_Webcam_C270_0001-video-index0",
    "/dev/v4l/by-path/platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.2:1.0-video-index0",
    "/dev/edgeclass-camera",  # a udev SYMLINK+= name
])
def test_stable_camera_path_absent_at_boot_is_a_camera_not_a_missing_file(spec):
    """By-id/by-path links exist only while the camera is plugged in: absent, they are still a camera."""
    source = open_source(spec)
    assert isinstance(source, OpenCVCamera) and source.live
    with pytest.raises(SourceMissing, match=r"no such device \(is the camera plugged in"):
        source.open()


def test_dangling_symlink_into_dev_is_a_camera(tmp_path):
    link = tmp_path / "front-door"
    link.symlink_to("/dev/v4l/by-id/usb-Absent_Webcam_0002-video-index0")
    source = open_source(link)
    assert isinstance(source, OpenCVCamera) and source.live
    with pytest.raises(SourceMissing, match="front-door: no such device"):
        source.open()
    # A link to a video that is not there yet is a missing source, to be waited for.
    video_link = tmp_path / "clip-link"
    video_link.symlink_to(tmp_path / "later.avi")
    with pytest.raises(SourceMissing, match="clip-link"):
        open_source(video_link)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_stream_is_a_source_error():
    url = f"http://127.0.0.1:{_free_port()}/cam.mjpg"
    source = open_source(url)
    assert isinstance(source, OpenCVCamera) and source.live
    with pytest.raises(SourceError, match="127.0.0.1"):
        source.open()


def test_http_stream_is_live_rgb_and_has_no_clean_end(clip):
    """A real HTTP server; FFmpeg reads the video from it like a network camera."""
    handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(clip.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source = open_source(f"http://127.0.0.1:{server.server_port}/{clip.name}")
        with source:
            assert source.live and "stream http://" in source.description
            frames = [source.read() for _ in range(20)]
            for frame in frames:
                assert_rgb_frame(frame)
            with pytest.raises(SourceError, match="no frame received"):
                source.read()  # a live source that stops is a failure, not an end
    finally:
        server.shutdown()
        server.server_close()


def test_unknown_source_names_it():
    with pytest.raises(SourceError, match="'webcam-please'"):
        open_source("webcam-please")
    with pytest.raises(SourceError, match="picamera2:x"):
        open_source("picamera2:x")


# -- picamera2 (faked: no Pi camera or libcamera can exist on this machine) ----


def test_picamera2_absent_gives_install_instructions(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes "import picamera2" fail
    source = open_source("picamera2")
    assert isinstance(source, Picamera2Camera) and source.live
    with pytest.raises(SourceError) as info:
        source.open()
    assert str(info.value) == PICAMERA2_MISSING


class FakePicamera2:
    """Stands in for picamera2.Picamera2 (no Pi camera or libcamera can exist here).

    It records the calls and hands out what libcamera would: the scene (left
    half red, right half blue) packed in the configured format's documented
    memory order (picamera2 manual: RGB888 [B, G, R], BGR888 [R, G, B],
    XRGB8888 [B, G, R, 255], XBGR8888 [R, G, B, 255]), as a view of a buffer
    whose rows are padded to a 64-byte stride, as picamera2's make_array returns it.
    ``adjust_to`` plays libcamera adjusting the requested format.
    """

    ORDER = {"RGB888": (2, 1, 0), "BGR888": (0, 1, 2), "XRGB8888": (2, 1, 0, None), "XBGR8888": (0, 1, 2, None),
             "YUV420": None}
    instances: list["FakePicamera2"] = []
    fail_with: Exception | None = None
    adjust_to: str | None = None

    def __init__(self, camera_num=0):
        if FakePicamera2.fail_with is not None:
            raise FakePicamera2.fail_with
        self.camera_num = camera_num
        self.calls: list[str] = []
        self.config = None
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, controls=None, **kwargs):
        return {"main": dict(main), "controls": dict(controls or {}), **kwargs}

    def configure(self, config):
        if FakePicamera2.adjust_to is not None:
            config = {**config, "main": {**config["main"], "format": FakePicamera2.adjust_to}}
        self.config = config
        self.camera_config = config
        self.calls.append("configure")

    def start(self):
        self.calls.append("start")

    def scene(self) -> np.ndarray:
        w, h = self.config["main"]["size"]
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[:, : w // 2] = (220, 30, 10)  # red
        rgb[:, w // 2 :] = (10, 30, 220)  # blue
        return rgb

    def capture_array(self, name="main"):
        rgb = self.scene()
        h, w, _ = rgb.shape
        order = self.ORDER[self.config["main"]["format"]]
        packed = np.stack([rgb[:, :, c] if c is not None else np.full((h, w), 255, np.uint8) for c in order], axis=2)
        row = w * len(order)
        stride = -(-row // 64) * 64
        buffer = np.zeros((h, stride), np.uint8)
        buffer[:, :row] = packed.reshape(h, row)
        return buffer[:, :row].reshape(h, w, len(order))

    def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    FakePicamera2.instances, FakePicamera2.fail_with, FakePicamera2.adjust_to = [], None, None
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


def test_fake_picamera2_packs_pixels_in_libcamera_memory_order(fake_picamera2):
    cam = FakePicamera2()
    for fmt, red_pixel in [("RGB888", [10, 30, 220]), ("BGR888", [220, 30, 10]),
                           ("XRGB8888", [10, 30, 220, 255]), ("XBGR8888", [220, 30, 10, 255])]:
        cam.configure({"main": {"size": (330, 8), "format": fmt}})
        array = cam.capture_array()
        assert list(array[0, 0]) == red_pixel, fmt  # the bytes of the first (red) pixel, in memory order
        assert not array.flags.c_contiguous  # 330 px rows padded to a 64-byte stride


@pytest.mark.parametrize("fmt", ["RGB888", "XRGB8888", "BGR888", "XBGR8888"])
def test_picamera2_frames_are_rgb_whatever_the_memory_order(fake_picamera2, fmt):
    source = Picamera2Camera(1, width=330, height=240, fps=20, pixel_format=fmt)
    with source:
        cam = fake_picamera2.instances[-1]
        assert cam.camera_num == 1
        assert cam.config["main"] == {"size": (330, 240), "format": fmt}
        assert cam.config["controls"]["FrameDurationLimits"] == (50_000, 50_000)
        assert cam.calls == ["configure", "start"]
        frame = source.read()
        assert f"picamera2 camera 1 (330x240 {fmt}" in source.description
    assert_rgb_frame(frame, h=240, w=330)
    assert tuple(frame.rgb[0, 0]) == (220, 30, 10) and tuple(frame.rgb[0, -1]) == (10, 30, 220)
    assert cam.calls[-2:] == ["stop", "close"]


def test_picamera2_follows_the_format_libcamera_configured(fake_picamera2):
    """Asked for RGB888, the camera stack adjusts to XRGB8888: the frames must still be RGB."""
    fake_picamera2.adjust_to = "XRGB8888"
    with open_source("picamera2", width=64, height=48) as source:
        frame = source.read()
        assert "XRGB8888" in source.description
    assert_rgb_frame(frame)


def test_picamera2_unsupported_format_is_a_clear_error(fake_picamera2):
    fake_picamera2.adjust_to = "YUV420"
    with pytest.raises(SourceError, match=r"picamera2 camera 0: cannot start at 640x480 \(the camera delivers YUV420"):
        open_source("picamera2").open()
    assert fake_picamera2.instances[-1].calls == ["configure", "close"]
    with pytest.raises(SourceError, match="picamera2 format 'NV12'"):
        Picamera2Camera(pixel_format="NV12")


def test_picamera2_default_size_and_open_failure(fake_picamera2):
    with open_source("picamera2") as source:
        assert fake_picamera2.instances[-1].config["main"]["size"] == (640, 480)
        assert source.read().rgb.shape == (480, 640, 3)
    fake_picamera2.fail_with = RuntimeError("Camera __init__ sequence did not complete.")
    with pytest.raises(SourceError, match="picamera2 camera 0: cannot open"):
        open_source("picamera2").open()


@pytest.mark.parametrize("text, expected", [
    ("rtsp://admin:hunter2@cam.local:554/stream1", "rtsp://***@cam.local:554/stream1"),
    ("rtsp://admin:p@ss@10.0.0.7/live", "rtsp://***@10.0.0.7/live"),  # an unescaped @ in the password
    ("stream http://u:p@h/x: cannot open; retrying rtsp://a:b@c/d", "stream http://***@h/x: cannot open; retrying rtsp://***@c/d"),
    ("rtsp://cam.local/stream?user=x@y", "rtsp://cam.local/stream?user=x@y"),  # no user info: unchanged
    ("/dev/v4l/by-id/usb-046d_C270-video-index0", "/dev/v4l/by-id/usb-046d_C270-video-index0"),
])
def test_redact_hides_url_user_and_password(text, expected):
    assert redact(text) == expected

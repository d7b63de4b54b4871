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
    """Stands in for picamera2.Picamera2: records calls, returns RGB888 (= B,G,R bytes) arrays."""

    instances: list["FakePicamera2"] = []
    fail_with: Exception | None = None

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
        self.config = config
        self.camera_config = config
        self.calls.append("configure")

    def start(self):
        self.calls.append("start")

    def capture_array(self, name="main"):
        w, h = self.config["main"]["size"]
        array = np.empty((h, w, 3), np.uint8)
        array[:] = (10, 20, 200)  # memory order B, G, R: a red scene
        return array

    def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    FakePicamera2.instances, FakePicamera2.fail_with = [], None
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


def test_picamera2_configures_rgb888_and_converts_to_rgb(fake_picamera2):
    source = open_source("picamera2:1", width=320, height=240, fps=20)
    with source:
        cam = fake_picamera2.instances[-1]
        assert cam.camera_num == 1
        assert cam.config["main"] == {"size": (320, 240), "format": "RGB888"}
        assert cam.config["controls"]["FrameDurationLimits"] == (50_000, 50_000)
        assert cam.calls == ["configure", "start"]
        frame = source.read()
        assert "picamera2 camera 1 (320x240" in source.description
    assert frame.rgb.shape == (240, 320, 3) and frame.rgb.flags.c_contiguous
    assert tuple(frame.rgb[0, 0]) == (200, 20, 10)  # red first
    assert cam.calls[-2:] == ["stop", "close"]


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

"""``edgeclass bench``: the device pipeline's figures on this machine, in one run.

Measured on a 640x480 MJPEG video written here (what a USB webcam delivers):

- invoke_fps: the interpreter alone, the same input tensor over and over;
- pipeline_fps: ``edgeclass run`` in a fresh process, every frame through
  capture thread -> preprocess -> infer -> decide -> JSON sink;
- naive_fps: the sequential loop most camera examples use (read, convert,
  resize, invoke, print), for comparison;
- preprocess_ms: :class:`Preprocessor` on one 640x480 frame;
- frame_checks_ms: the capture thread's checks on one 640x480 frame (blank,
  and frozen: compared with the previous picture), for two different frames
  (a working camera) and for two identical ones (the full comparison);
- first_result_s: from starting the ``edgeclass run`` process to its first result line;
- peak_rss_mb: that process's peak resident memory.

With ``outputs=True`` (``bench --outputs``) the same pipeline also runs with
the HTTP output on (and MQTT with ``--mqtt URL``), alternating with plain
runs so all three are measured under the same machine load:

- pipeline_fps_outputs_idle: outputs on, nobody watching (target >= 0.97 of pipeline_fps);
- pipeline_fps_outputs: outputs on and one MJPEG viewer connected throughout (target >= 0.90);
- peak_rss_mb_outputs: the process with a viewer (target <= 150 MB);
- viewer_frames / viewer_fps: JPEG frames the viewer received, and their rate.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .bundle import load_bundle
from .errors import EdgeclassError
from .pipeline.capture import is_blank, same_picture
from .pipeline.classifier import EdgeTPU, open_classifier
from .pipeline.preprocess import Preprocessor


def write_test_video(path: Path, frames: int, size: tuple[int, int] = (640, 480), fps: float = 30.0) -> Path:
    """Write an MJPEG video of moving shapes over noise (so every frame differs)."""
    import cv2

    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise EdgeclassError(f"{path}: OpenCV cannot write an MJPEG video here")
    rng = np.random.default_rng(0)
    background = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    try:
        for i in range(frames):
            frame = background.copy()
            x = int((i * 7) % width)
            cv2.circle(frame, (x, height // 2), 90, (40, 120 + (i % 100), 230), -1)
            cv2.rectangle(frame, (width - x, 60), (width - x + 120, 180), (200, 60, 40), -1)
            writer.write(frame)
    finally:
        writer.release()
    return path


def _rate(fn: Callable[[], None], seconds: float, min_calls: int = 20) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(5):
        fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def _naive_fps(video: Path, bundle, threads: int) -> float:
    """The common example loop: everything in sequence, one frame at a time."""
    import cv2

    classifier = open_classifier(bundle, num_threads=threads, edgetpu=EdgeTPU.OFF)
    spec = bundle.input
    preprocess = Preprocessor(spec)
    capture = cv2.VideoCapture(str(video))
    frames, start = 0, time.perf_counter()
    with open(os.devnull, "w") as devnull:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            scores = classifier.scores(preprocess(rgb))
            print(bundle.labels[int(np.argmax(scores))], file=devnull)
            frames += 1
    capture.release()
    return frames / (time.perf_counter() - start)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Viewer(threading.Thread):
    """One browser's worth of MJPEG: connects as soon as the port listens, reads every part until the end."""

    def __init__(self, port: int, proc: subprocess.Popen) -> None:
        super().__init__(name="bench-viewer", daemon=True)
        self.port, self.proc = port, proc
        self.frames = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def run(self) -> None:
        import http.client

        while self.proc.poll() is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/stream.mjpg")
                response = conn.getresponse()
                break
            except OSError:
                time.sleep(0.002)
        else:
            return
        try:
            while True:
                line = response.fp.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                    response.fp.readline()
                    if len(response.fp.read(length)) < length:
                        return
                    self.frames += 1
                    self.last_at = time.perf_counter()
                    self.first_at = self.first_at or self.last_at
        except OSError:
            return
        finally:
            conn.close()

    @property
    def fps(self) -> float:
        if self.frames < 2:
            return 0.0
        return (self.frames - 1) / (self.last_at - self.first_at)


def _pipeline(video: Path, bundle_path: Path, threads: int, extra: tuple[str, ...] = (), viewer_port: int | None = None) -> dict:
    """Run ``edgeclass run`` as a fresh process; time to first line, fps, peak RSS (and the viewer's figures)."""
    summary = Path(tempfile.mkstemp(suffix=".json")[1])
    cmd = [sys.executable, "-m", "edgeclass.device.cli", "run", "--bundle", str(bundle_path), "--source", str(video),
           "--format", "jsonl", "--emit", "all", "--threads", str(threads), "--edgetpu", "off",
           "--summary-json", str(summary), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    viewer = None
    if viewer_port is not None:
        viewer = _Viewer(viewer_port, proc)
        viewer.start()
    first_line_at: list[float] = []
    lines = 0
    stderr_chunks: list[str] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    for _line in proc.stdout:
        if not first_line_at:
            first_line_at.append(time.perf_counter() - start)
        lines += 1
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(5)
    if proc.returncode != 0:
        tail = "".join(stderr_chunks).strip().splitlines()[-1:] or ["no output"]
        raise EdgeclassError(f"edgeclass run failed in the benchmark (exit {proc.returncode}): {tail[0]}")
    result = json.loads(summary.read_text())
    summary.unlink()
    result["first_result_s"] = round(first_line_at[0], 3) if first_line_at else None
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB
    result["lines"] = lines
    if viewer is not None:
        viewer.join(5)
        result["viewer_frames"], result["viewer_fps"] = viewer.frames, round(viewer.fps, 1)
    return result


def _outputs_args(port: int, mqtt: str | None) -> tuple[str, ...]:
    args = ("--http", f"127.0.0.1:{port}")
    return args if mqtt is None else (*args, "--mqtt", mqtt)


def _with_outputs(video: Path, bundle_path: Path, threads: int, repeat: int, mqtt: str | None,
                  say: Callable[[str], None]) -> dict:
    """Plain, outputs-on and outputs-plus-viewer runs, alternated ``repeat`` times; the medians."""
    plain, idle, watched = [], [], []
    for i in range(repeat):
        plain.append(_pipeline(video, bundle_path, threads))
        port = _free_port()
        idle.append(_pipeline(video, bundle_path, threads, _outputs_args(port, mqtt)))
        port = _free_port()
        watched.append(_pipeline(video, bundle_path, threads, _outputs_args(port, mqtt), viewer_port=port))
        say(f"round {i + 1}/{repeat}: pipeline {plain[-1]['fps']:.1f} fps, outputs on {idle[-1]['fps']:.1f}, "
            f"with a viewer {watched[-1]['fps']:.1f} ({watched[-1]['viewer_frames']} JPEG frames received)")
    median = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    base = median(plain, "fps")
    return {
        "pipeline_fps": round(base, 1),
        "pipeline_fps_outputs_idle": round(median(idle, "fps"), 1),
        "pipeline_fps_outputs": round(median(watched, "fps"), 1),
        "outputs_idle_over_pipeline": round(median(idle, "fps") / base, 3),
        "outputs_over_pipeline": round(median(watched, "fps") / base, 3),
        "peak_rss_mb_outputs": max(r["peak_rss_mb"] for r in watched),
        "viewer_frames": int(median(watched, "viewer_frames")),
        "viewer_fps": round(median(watched, "viewer_fps"), 1),
        "outputs": "http" + ("+mqtt" if mqtt else ""),
        "repeat": repeat,
        "_plain": plain[0],
    }


def run_benchmark(bundle_path: Path, frames: int = 600, threads: int | None = None, workdir: Path | None = None,
                  progress: Callable[[str], None] | None = None, outputs: bool = False, mqtt: str | None = None,
                  repeat: int = 1) -> dict:
    """All figures as one dict (see the module docstring)."""
    say = progress or (lambda _msg: None)
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores - 1)
    bundle = load_bundle(bundle_path)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        video = write_test_video(Path(tmp) / "bench-640x480.avi", frames)
        say(f"wrote {frames} frames of 640x480 MJPEG video; interpreter threads {threads} of {cores} cores")

        import cv2

        capture = cv2.VideoCapture(str(video))
        sample = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(10)]
        capture.release()
        preprocess = Preprocessor(bundle.input)
        i = iter(range(10**9))
        preprocess_ms = 1000.0 / _rate(lambda: preprocess(sample[next(i) % 10]), 1.0)
        say(f"preprocess      {preprocess_ms:.3f} ms per 640x480 frame")
        j = iter(range(10**9))
        checks_ms = 1000.0 / _rate(lambda: (is_blank(sample[(k := next(j)) % 10]),
                                            same_picture(sample[k % 10], sample[(k + 1) % 10])), 1.0)
        twin = sample[0].copy()
        identical_ms = 1000.0 / _rate(lambda: (is_blank(sample[0]), same_picture(sample[0], twin)), 1.0)
        say(f"frame checks    {checks_ms:.3f} ms per frame (blank + frozen; {identical_ms:.3f} ms for identical frames)")

        classifier = open_classifier(bundle, num_threads=threads, edgetpu=EdgeTPU.OFF)
        tensor = preprocess(sample[0])
        invoke_fps = _rate(lambda: classifier.invoke(tensor), 3.0)
        say(f"invoke          {invoke_fps:.1f} /s (interpreter alone, {classifier.backend})")
        classifier = None  # release the interpreter before the next measurement

        naive_fps = _naive_fps(video, bundle, threads)
        say(f"naive loop      {naive_fps:.1f} fps (read, convert, resize, invoke, print in sequence)")

        with_outputs = None
        if outputs:
            with_outputs = _with_outputs(video, Path(bundle_path), threads, repeat, mqtt, say)
            pipe = with_outputs.pop("_plain")
            pipe["fps"] = with_outputs["pipeline_fps"]  # the median of the plain runs
        else:
            pipe = _pipeline(video, Path(bundle_path), threads)
        say(f"pipeline        {pipe['fps']:.1f} fps ({pipe['frames']} frames through edgeclass run)")
        say(f"first result    {pipe['first_result_s']:.2f} s from process start")
        say(f"peak RSS        {pipe['peak_rss_mb']:.0f} MB")
    results = {
        "bundle": str(bundle_path),
        "cores": cores,
        "threads": threads,
        "frames": frames,
        "invoke_fps": round(invoke_fps, 1),
        "pipeline_fps": round(pipe["fps"], 1),
        "naive_fps": round(naive_fps, 1),
        "pipeline_over_invoke": round(pipe["fps"] / invoke_fps, 3),
        "pipeline_over_naive": round(pipe["fps"] / naive_fps, 3),
        "preprocess_ms": round(preprocess_ms, 3),
        "frame_checks_ms": round(checks_ms, 4),
        "frame_checks_identical_ms": round(identical_ms, 4),
        "first_result_s": pipe["first_result_s"],
        "peak_rss_mb": pipe["peak_rss_mb"],
        "latency_ms_p50": pipe["latency_ms_p50"],
        "latency_ms_p95": pipe["latency_ms_p95"],
    }
    say(f"pipeline / invoke {results['pipeline_over_invoke']:.3f}, pipeline / naive {results['pipeline_over_naive']:.3f}")
    if with_outputs is not None:
        results.update(with_outputs)
        say(f"outputs on ({with_outputs['outputs']}), no viewer: {with_outputs['pipeline_fps_outputs_idle']:.1f} fps "
            f"({with_outputs['outputs_idle_over_pipeline']:.3f} of the pipeline; target 0.97)")
        say(f"outputs on, one MJPEG viewer: {with_outputs['pipeline_fps_outputs']:.1f} fps "
            f"({with_outputs['outputs_over_pipeline']:.3f}; target 0.90), viewer got {with_outputs['viewer_frames']} "
            f"frames at {with_outputs['viewer_fps']:.1f} fps, peak RSS {with_outputs['peak_rss_mb_outputs']:.0f} MB (target 150)")
    return results

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
"""

from __future__ import annotations

import json
import os
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


def _pipeline(video: Path, bundle_path: Path, threads: int) -> dict:
    """Run ``edgeclass run`` as a fresh process; time to first line, fps, peak RSS."""
    summary = Path(tempfile.mkstemp(suffix=".json")[1])
    cmd = [sys.executable, "-m", "edgeclass.device.cli", "run", "--bundle", str(bundle_path), "--source", str(video),
           "--format", "jsonl", "--emit", "all", "--threads", str(threads), "--edgetpu", "off",
           "--summary-json", str(summary)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    return result


def run_benchmark(bundle_path: Path, frames: int = 600, threads: int | None = None, workdir: Path | None = None,
                  progress: Callable[[str], None] | None = None) -> dict:
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
    return results

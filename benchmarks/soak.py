"""Soak benchmark: bounded memory, threads and file descriptors over a long run (not a unit test).

Runs at least 100,000 frames from a looping video through the same path as
``edgeclass run --config``: the capture thread, the Runner, the systemd hooks
(a real notify socket, watchdog pings, STATUS lines, the state file every
0.2 s) and, with ``--uncertain``, the uncertain-frame saver. The video is
short, so the capture is also reopened at every loop (hundreds of reopens).

Prints RSS, thread and fd counts after a warm-up and at the end (issue 5's
target: RSS growth under 5 MB, no thread or fd growth), with samples on the
way so a slow leak shows as a trend, not a single difference. The machine is
shared: frame rates are not the point.

    python benchmarks/soak.py                          # tiny colour classifier, 100,000 frames
    python benchmarks/soak.py --bundle DIR --frames 100000
    python benchmarks/soak.py --coral                  # Coral's mobilenet_v1_0.25_128 from ../shared/data
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/device/tinymodel.py and its frames


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def native_threads() -> int:
    """OS threads (Python's plus XNNPACK's and FFmpeg's own pools)."""
    return len(os.listdir("/proc/self/task"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sample(frames: int) -> dict:
    gc.collect()
    return {"frames": frames, "rss_mb": rss_mb(), "threads": native_threads(),
            "py_threads": threading.active_count(), "fds": open_fds()}


def make_inputs(work: Path, args) -> tuple[Path, Path]:
    from edgeclass.device.pipeline.wrap import create_bundle_from_model
    from tests.device.conftest import colour_frame, write_video
    from tests.device.tinymodel import write_colour_classifier

    frames = [colour_frame(name, 240, 320, seed=i) for name in ("red", "green", "blue") for i in range(40)]
    video = write_video(work / "soak.avi", frames)
    if args.bundle:
        return Path(args.bundle), video
    if args.coral:
        coral = REPO.parent / "shared" / "data" / "coral"
        return create_bundle_from_model(coral / "mobilenet_v1_0.25_128_quant.tflite", coral / "imagenet_labels.txt",
                                        work / "coral-bundle"), video
    model, labels = write_colour_classifier(work)
    return create_bundle_from_model(model, labels, work / "bundle"), video


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=2_000, help="frames before the start figures")
    parser.add_argument("--bundle", help="a bundle directory (default: the tiny colour classifier)")
    parser.add_argument("--coral", action="store_true", help="Coral's mobilenet_v1_0.25_128 from ../shared/data")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--uncertain", action="store_true", help="also save uncertain frames (threshold 1.0: every frame is a candidate)")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from edgeclass.device.outputs.factory import build_outputs
    from edgeclass.device.pipeline.loop import Output, RunLimits, Runner
    from edgeclass.device.service import systemd
    from edgeclass.device.service.runconfig import RunRequest, load_run
    from edgeclass.device.service.supervise import Liveness, Supervisor

    work = Path(tempfile.mkdtemp(prefix="edgeclass-soak-"))
    bundle, video = make_inputs(work, args)

    # Play systemd: a notify socket drained by a thread, a 2 s watchdog (a ping a second).
    notify_path = str(work / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(0.5)
    received = {"WATCHDOG=1": 0, "READY=1": 0, "STATUS": 0}
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            try:
                for line in sock.recv(65536).decode().split("\n"):
                    key = "STATUS" if line.startswith("STATUS=") else line
                    if key in received:
                        received[key] += 1
            except socket.timeout:
                continue

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    os.environ["NOTIFY_SOCKET"] = notify_path
    os.environ["WATCHDOG_USEC"] = "2000000"

    cli = {"model": {"bundle": str(bundle), "threads": args.threads}, "source": {"source": str(video), "loop": True},
           "service": {"state_file": str(work / "state.json"), "state_interval": 0.2}}
    if args.uncertain:
        cli["uncertain"] = {"dir": str(work / "uncertain"), "threshold": 1.0, "max_per_minute": 60, "max_mb": 2.0}
    loaded = load_run(RunRequest(None, cli))
    src = loaded.config.source
    supervisor = Supervisor(watchdog=systemd.Watchdog.from_env(), state_file=loaded.state_file, state_interval=0.2,
                            liveness=Liveness.for_options(src.stall_timeout, src.reopen_backoff_max, time.monotonic()))

    class Counting(Output):
        """Counts the results instead of printing them: the figures are about the process itself."""

        records = 0

        def write(self, frame, decision) -> None:
            Counting.records += 1

    samples: list[dict] = []
    every = max(args.frames // 10, 1)

    class Probe(Output):
        def start(self, run) -> None:
            self.run = run

        def write(self, frame, decision) -> None:
            n = self.run.stats.frames
            if n == args.warmup or n % every == 0 or n == args.frames:
                samples.append(sample(n))
                print(f"  {n:>7} frames  RSS {samples[-1]['rss_mb']:.1f} MB  threads {samples[-1]['threads']}"
                      f" (python {samples[-1]['py_threads']})  fds {samples[-1]['fds']}", flush=True)

    # The configured outputs but the result stream (the uncertain saver with --uncertain).
    extra = [o for name, o in build_outputs(loaded.config).items() if name != "stream"]
    runner = Runner(loaded.bundle, loaded.classifier, src, loaded.config.decision,
                    outputs=[Counting(), *extra, supervisor, Probe()], limits=RunLimits(max_frames=args.frames))
    print(f"soak: {args.frames} frames of {video.name} (looping, every frame counted) through {loaded.bundle.name}")
    started = time.perf_counter()
    summary = runner.run()
    elapsed = time.perf_counter() - started
    for output in runner.outputs:
        output.close()
    after = sample(summary["frames"])
    start = next(s for s in samples if s["frames"] == args.warmup)
    end = samples[-1]  # the last frame, still inside the loop (capture thread running)
    stop.set()
    drainer.join(2)
    print(f"frames {summary['frames']} in {elapsed:.0f} s ({summary['fps']:.0f} fps), {summary['frames'] // 120} passes "
          f"over the 120-frame video (the capture is reopened at each), {Counting.records} records")
    print(f"notify: READY {received['READY=1']}, WATCHDOG {received['WATCHDOG=1']}, STATUS {received['STATUS']}")
    print(f"RSS      start {start['rss_mb']:.1f} MB  end {end['rss_mb']:.1f} MB  growth {end['rss_mb'] - start['rss_mb']:+.1f} MB")
    print(f"threads  start {start['threads']}  end {end['threads']}  (python {start['py_threads']} -> {end['py_threads']})")
    print(f"fds      start {start['fds']}  end {end['fds']}")
    print(f"after close: RSS {after['rss_mb']:.1f} MB, threads {after['threads']}, fds {after['fds']}")
    ok = summary["frames"] >= args.frames and end["rss_mb"] - start["rss_mb"] < 5 and \
        end["threads"] <= start["threads"] and end["fds"] <= start["fds"]
    print("PASS" if ok else "FAIL", "(targets: RSS growth < 5 MB, no thread or fd growth)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

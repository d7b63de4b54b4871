"""``edgeclass predict|run|bench``: classify files, run live, measure the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import EdgeclassError, printable
from ..errors import parse_choice as _choice
from .app import app, log


@app.command()
def predict(
    paths: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    bundle: Path = typer.Option(..., "--bundle", "-b", help="Bundle directory."),
    top: int = typer.Option(3, "--top-k", "-k", min=1, help="How many labels to show per image."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image: path, label, score, top_k."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads (default: all cores)."),
    edgetpu: str = typer.Option("auto", "--edgetpu", help="auto, on or off."),
) -> None:
    """Classify image files and folders; files that are not images are skipped and listed."""
    from ..bundle import load_bundle
    from ..pipeline.classifier import EdgeTPU, open_classifier
    from ..pipeline.images import list_images
    from ..pipeline.predict import predict_files
    from ..pipeline.preprocess import Preprocessor

    b = load_bundle(bundle)
    listing = list_images(paths)
    classifier = open_classifier(b, num_threads=threads, edgetpu=_choice(EdgeTPU, edgetpu, "--edgetpu"))
    failed = list(listing.skipped)
    for skipped in listing.skipped:
        typer.echo(printable(f"skipped {skipped}: not an image file"), err=True)
    done = 0
    for result in predict_files(classifier, Preprocessor(b.input), b.labels, listing.images, k=top):
        if result.error:
            typer.echo(printable(f"skipped {result.error}"), err=True)
            failed.append(result.path)
            continue
        done += 1
        best = result.top_k[0]
        if as_json:
            typer.echo(json.dumps({
                "path": str(result.path),
                "label": best.label,
                "score": round(best.score, 6),
                "top_k": [{"label": s.label, "score": round(s.score, 6)} for s in result.top_k],
            }))
        else:
            # Labels and file names come from other people's files: no terminal control codes.
            rest = ", ".join(f"{s.label} {s.score:.3f}" for s in result.top_k[1:])
            typer.echo(printable(f"{result.path}: {best.label} {best.score:.3f}" + (f"  ({rest})" if rest else "")))
    if failed:
        typer.echo(f"{done} images classified, {len(failed)} files skipped", err=True)
    if done == 0:
        raise EdgeclassError(f"no images classified among {', '.join(map(str, paths))}")


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", dir_okay=False, help="Service config (TOML, e.g. /etc/edgeclass/device.toml). Options given here override it; it overrides the bundle's defaults."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="Bundle directory (or \\[model] bundle in --config)."),
    source: Optional[str] = typer.Option(None, "--source", "-s", help="Camera index (0), /dev/videoN, rtsp:// or http:// URL, video file, image folder, or picamera2 (or \\[source] source in --config)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many classified frames."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.0, help="Stop after this many seconds."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where results go: - for stdout (default), or a file (appended)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="jsonl (one JSON object per result) or human (default without --config)."),
    emit: Optional[str] = typer.Option(None, "--emit", help="all: every frame (default without --config); changes: when the label changes, plus a heartbeat."),
    heartbeat: Optional[float] = typer.Option(None, "--heartbeat", min=0.1, help="Seconds between repeats of an unchanged label (--emit changes; default 10)."),
    top: Optional[int] = typer.Option(None, "--top-k", "-k", min=1, help="Labels per result (default 3)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Below this smoothed score the answer is 'unknown' (default 0.5)."),
    smoothing: Optional[float] = typer.Option(None, "--smoothing", min=0.0, max=0.99, help="Moving-average weight kept from past frames (0 = none, the default; 0.8 ≈ last 5)."),
    stats_interval: Optional[float] = typer.Option(None, "--stats", min=0.0, help="Seconds between fps/latency stats records (0 = none, the default without --config)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads (default: all cores; one fewer leaves a core for capture)."),
    edgetpu: Optional[str] = typer.Option(None, "--edgetpu", help="auto (default), on or off."),
    width: Optional[int] = typer.Option(None, help="Camera capture width."),
    height: Optional[int] = typer.Option(None, help="Camera capture height."),
    fps: Optional[float] = typer.Option(None, help="Camera capture frame rate (with --realtime: the pace of a file)."),
    stall_timeout: Optional[float] = typer.Option(None, "--stall-timeout", min=0.1, help="Seconds without a frame before the source is reopened (default 5)."),
    give_up_after: Optional[float] = typer.Option(None, "--give-up-after", min=0.0, help="Seconds without a good frame before exiting non-zero (0 = never; default 300)."),
    loop: bool = typer.Option(False, "--loop", help="Replay a video file or image folder forever."),
    realtime: bool = typer.Option(False, "--realtime", help="Pace a video file or image folder at its frame rate, like a camera."),
    wait_for_source: bool = typer.Option(False, "--wait-for-source", help="Keep retrying a camera that is absent at start (default: fail at once; always on with --config)."),
    state_file: Optional[Path] = typer.Option(None, "--state-file", help="Write the health state file here (default: none, or \\[service] state_file with --config)."),
    save_uncertain: Optional[Path] = typer.Option(None, "--save-uncertain", help="Save frames whose top score is below \\[uncertain] threshold (0.3) into this folder, JPEG + JSON."),
    mqtt: Optional[str] = typer.Option(None, "--mqtt", help="Publish to this MQTT broker, mqtt://HOST[:PORT] or mqtts://HOST[:PORT], with Home Assistant discovery (or \\[mqtt] url in --config; user and password only there)."),
    mqtt_topic: Optional[str] = typer.Option(None, "--mqtt-topic", help="MQTT topic prefix (default edgeclass/<hostname>)."),
    http: Optional[str] = typer.Option(None, "--http", help="Serve the live page, API and /metrics on HOST:PORT (e.g. 127.0.0.1:8080; off by default). Any address but loopback needs --http-token-file."),
    http_token_file: Optional[Path] = typer.Option(None, "--http-token-file", help="File holding the access token for --http (\\[http] token_file)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset folder the live page's collect and review pages save into (\\[http] dataset)."),
    summary_json: Optional[Path] = typer.Option(None, "--summary-json", help="Write the run summary (fps, latencies) to this JSON file."),
) -> None:
    """Classify frames live from a camera, stream, video file or image folder (also the systemd service's command).

    Under systemd (Type=notify): READY=1 after the first classified frame
    (or once a camera or a first bundle is being waited for), STATUS= lines,
    WATCHDOG=1 from the frame loop, STOPPING=1 on SIGTERM. SIGTERM and
    Ctrl-C stop cleanly (exit 0) at any time. SIGHUP re-reads --config and
    reloads the bundle under systemd or with --config (all or nothing: the old
    model keeps running if anything fails); in a plain terminal run it stops
    the run, as a hang-up does.
    """
    from ..outputs.stream import Emit, OutputFormat
    from ..pipeline.classifier import EdgeTPU
    from ..pipeline.loop import RunLimits
    from ..service.run import run_service

    if config is None and (bundle is None or source is None):
        raise EdgeclassError("run needs --bundle and --source, or --config FILE (with [model] bundle and [source] source)")
    cli_values = {
        "model": {"bundle": bundle and str(bundle), "threads": threads,
                  "edgetpu": edgetpu and _choice(EdgeTPU, edgetpu, "--edgetpu").value},
        "source": {"source": source, "width": width, "height": height, "fps": fps,
                   "stall_timeout": stall_timeout, "give_up_after": give_up_after,
                   "loop": loop or None, "realtime": realtime or None, "wait_for_source": wait_for_source or None},
        "decision": {"top_k": top, "threshold": threshold, "smoothing": smoothing, "heartbeat": heartbeat},
        "output": {"format": fmt and _choice(OutputFormat, fmt, "--format").value, "path": output,
                   "emit": emit and _choice(Emit, emit, "--emit").value, "stats_interval": stats_interval},
        "service": {"state_file": state_file and str(state_file)},
        "uncertain": {"dir": save_uncertain and str(save_uncertain)},
        "mqtt": {"url": mqtt, "topic": mqtt_topic},
        "http": {"listen": http, "token_file": http_token_file and str(http_token_file), "dataset": dataset and str(dataset)},
    }
    summary = run_service(config, cli_values, limits=RunLimits(max_frames=max_frames, duration=duration))
    if summary["stopped"] and summary["frames"] == 0:
        log.info("stopped by %s before the first frame", summary["stopped"])
    else:
        log.info("%d frames in %.1f s: %.1f fps, latency p50 %.1f ms p95 %.1f ms, %d dropped, %d reopens",
                 summary["frames"], summary["seconds"], summary["fps"], summary["latency_ms_p50"],
                 summary["latency_ms_p95"], summary["dropped"], summary["reopens"])
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if summary["frames"] == 0 and not summary["stopped"]:
        raise EdgeclassError(f"{summary['source']}: no frames were classified")


@app.command()
def bench(
    bundle: Path = typer.Option(..., "--bundle", "-b", help="Bundle directory."),
    frames: int = typer.Option(600, "--frames", min=10, help="Frames in the generated 640x480 test video."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads (default: cores - 1, at least 1)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with all figures."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Where to write the test video (default: a temporary directory)."),
    outputs: bool = typer.Option(False, "--outputs", help="Also run with the HTTP output on, without and with one MJPEG viewer (pipeline_fps_outputs)."),
    mqtt: Optional[str] = typer.Option(None, "--mqtt", help="With --outputs: publish to this broker too (mqtt://host:port)."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="With --outputs: alternate the runs this many times and report medians."),
) -> None:
    """Measure the device pipeline on this machine: invoke rate, pipeline rate, naive loop, preprocessing, start-up, memory."""
    from ..bench import run_benchmark

    if mqtt is not None and not outputs:
        raise EdgeclassError("--mqtt is part of --outputs: add --outputs")
    results = run_benchmark(bundle, frames=frames, threads=threads, workdir=workdir,
                            progress=None if as_json else typer.echo, outputs=outputs, mqtt=mqtt, repeat=repeat)
    if as_json:
        typer.echo(json.dumps(results))

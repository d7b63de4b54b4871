"""``edgeclass collect``: save camera frames into a dataset folder from a page in the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import EdgeclassError
from .app import app, log


@app.command()
def collect(
    source: str = typer.Option(..., "--source", "-s", help="Camera index (0), /dev/videoN, rtsp:// or http:// URL, video file, image folder, or picamera2."),
    output: Path = typer.Option(..., "--output", "-o", help="Dataset folder: photos go to DATASET/<label>/ (what edgeclass train reads)."),
    labels: Optional[str] = typer.Option(None, "--labels", "-l", help="Comma-separated labels, one button each (no model needed)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="Run this bundle beside the buttons; its labels are the buttons unless --labels is given."),
    http: str = typer.Option("127.0.0.1:8080", "--http", help="HOST:PORT of the page. Any address but loopback needs --http-token-file."),
    http_token_file: Optional[Path] = typer.Option(None, "--http-token-file", help="File holding the access token (send it as ?token= or Authorization: Bearer)."),
    review: Optional[Path] = typer.Option(None, "--review", help="Also sort the uncertain frames saved in this folder (\\[uncertain] dir) on /review."),
    width: Optional[int] = typer.Option(None, help="Camera capture width."),
    height: Optional[int] = typer.Option(None, help="Camera capture height."),
    fps: Optional[float] = typer.Option(None, help="Camera capture frame rate."),
    loop: bool = typer.Option(False, "--loop", help="Replay a video file or image folder forever."),
    realtime: bool = typer.Option(False, "--realtime", help="Pace a video file or image folder at its frame rate, like a camera."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Interpreter threads with --bundle."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.0, help="Stop after this many seconds (default: until Ctrl-C)."),
) -> None:
    """Show the camera in the browser with one button per label; each press saves the frame into DATASET/<label>/.

    Keys 1-9 (then a-z) press the buttons; the burst box saves N frames at an
    interval. Photos are never overwritten, and the folder is a dataset that
    `edgeclass train DATASET` reads as it is.
    """
    from ..pipeline.config import SourceConfig
    from ..pipeline.loop import RunLimits
    from ..service.collect import run_collect
    from ..settings import Invalid
    from ..settings import source as check_source

    try:
        spec = check_source(source, Path.cwd())
    except Invalid as exc:
        raise EdgeclassError(f"--source {source!r} {exc}") from None
    names = None if labels is None else [part.strip() for part in labels.split(",") if part.strip()]
    if names is not None and not names:
        raise EdgeclassError("--labels is empty: give the class names, for example --labels cat,dog,empty")
    summary = run_collect(SourceConfig(source=spec, width=width, height=height, fps=fps, loop=loop, realtime=realtime),
                          output, labels=names, bundle=bundle, listen=http, token_file=http_token_file, review=review,
                          threads=threads, limits=RunLimits(duration=duration))
    counts = ", ".join(f"{label} {n}" for label, n in summary["counts"].items())
    log.info("%s now holds: %s", output, counts)

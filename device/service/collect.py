"""``edgeclass collect`` put together: a camera, the live page with one button per label, a dataset folder.

With ``--bundle`` the model runs too (its answer shows beside the buttons, and
its labels are the buttons unless ``--labels`` says otherwise); with
``--labels`` alone nothing is classified: a :class:`CaptureLoop` hands frames
to the page and nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ..errors import EdgeclassError
from ..outputs.dataset import Dataset, check_labels
from ..outputs.http import HttpOutput
from ..outputs.http.access import access_for
from ..pipeline.config import SourceConfig
from ..pipeline.loop import CaptureLoop, RunLimits, Runner
from .signals import RunSignals

log = logging.getLogger(__name__)


def run_collect(source: SourceConfig, dataset: Path, *, labels: Sequence[str] | None = None, bundle: Path | None = None,
                listen: str = "127.0.0.1:8080", token_file: Path | None = None, review: Path | None = None,
                threads: int | None = None, edgetpu: str = "auto", limits: RunLimits = RunLimits()) -> dict:
    """Serve the collect page until stopped (Ctrl-C, SIGTERM) or a limit; the summary with the per-label counts."""
    if labels is None and bundle is None:
        raise EdgeclassError("collect needs --labels a,b,c (no model) or --bundle B (its labels, and its answer shown)")
    if review is not None and not Path(review).is_dir():
        raise EdgeclassError(f"--review {review}: no such folder (the [uncertain] dir the service saves frames into)")
    folder = Dataset(dataset)  # refuses a file or a train/val/test root before anything starts
    loaded = None
    if bundle is not None:
        from ..pipeline.classifier import EdgeTPU
        from ..pipeline.verify import verify_bundle

        loaded = verify_bundle(bundle, threads=threads, edgetpu=EdgeTPU(edgetpu))
    chosen = check_labels(labels if labels is not None else loaded[0].labels)
    http = HttpOutput(listen, access=access_for(listen, token_file), dataset=folder.root, uncertain_dir=review,
                      labels=chosen)
    try:
        if loaded is not None:
            loop = Runner(loaded[0], loaded[1], source, outputs=[http], limits=limits)
        else:
            loop = CaptureLoop(source, outputs=[http], limits=limits)
        log.info("collecting into %s: open http://%s/collect%s", folder.root, http.server.address,
                 f"?token=TOKEN (the token in {token_file})" if http.site.access.required else "")
        signals = RunSignals(reload=False).install()  # Ctrl-C, SIGTERM and a hang-up stop collecting
        signals.on_stop(loop.stop)
        try:
            summary = loop.run()
        finally:
            signals.restore()
    finally:
        http.close()
    summary["source"] = loop.source_description()
    summary["counts"] = folder.counts(chosen)
    return summary

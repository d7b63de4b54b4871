"""``edgeclass run`` put together: config, bundle, outputs, runner, supervision, signals, reloads.

The command line parses options into the nested config layout; this module
does the rest, the same way interactively and under systemd:

1. signals first (:mod:`.signals`): a SIGTERM during start-up ends the run at once;
2. the configuration (a bad file is an error, exit 2);
3. the supervisor (state file, READY=1, watchdog), then the bundle: as a
   service it is waited for when none is deployed yet (:mod:`.first_bundle`);
4. the outputs and the frame loop, with SIGHUP reloads that replace
   configuration, bundle and outputs all at once or not at all
   (:mod:`.reconfigure`, :mod:`.hotreload`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from ..errors import EdgeclassError
from ..outputs.factory import build_outputs
from ..pipeline.loop import RunLimits, Runner
from ..pipeline.sources import redact
from . import systemd
from .first_bundle import load_first_bundle
from .hotreload import Reloader
from .reconfigure import Prepared, RunningSetup
from .runconfig import RunRequest, resolve_config, state_file_for
from .signals import RunSignals, Stopped
from .supervise import Liveness, Supervisor

log = logging.getLogger(__name__)


def run_service(config_path: Path | None, cli_values: Mapping[str, Mapping[str, Any]], *,
                limits: RunLimits = RunLimits()) -> dict:
    """Run until stopped or done; the runner's summary dict (plus ``source`` and ``stopped``).

    With a config file the process behaves as the service: a camera absent at
    start is retried (it may still be booting), a bundle not deployed yet is
    waited for, the state file is written. ``stopped`` names the signal that
    ended the run (a clean stop, even before the first frame), else None.
    """
    request = RunRequest(config_path, cli_values)
    # SIGHUP reloads under systemd (ExecReload) or with a config file to re-read; otherwise it is a hang-up.
    signals = RunSignals(reload=request.service or bool(os.environ.get("NOTIFY_SOCKET"))).install()
    started = time.monotonic()
    try:
        return _run(request, limits, signals, started)
    except Stopped:
        return _no_frames(started, request, signals)
    finally:
        signals.restore()


def _run(request: RunRequest, limits: RunLimits, signals: RunSignals, started: float) -> dict:
    with signals.interruptible():
        first = resolve_config(request)
    watchdog = systemd.Watchdog.from_env()
    if watchdog.enabled:
        log.info("systemd watchdog: %g s; pinging every %g s while frames are classified, the source is being "
                 "recovered, or a bundle is awaited", watchdog.interval, watchdog.ping_every)
    source = first.source
    supervisor = Supervisor(
        watchdog=watchdog,
        liveness=Liveness.for_options(source.stall_timeout, source.reopen_backoff_max, now=time.monotonic()),
        state_file=state_file_for(request, first), state_interval=first.service.state_interval,
        edgetpu_setting=first.model.edgetpu,
    )
    signals.on_stop(supervisor.stopping)
    # --duration also bounds a wait for the first bundle (the frame loop counts its own from its start).
    deadline = None if limits.duration is None else started + limits.duration
    loaded = load_first_bundle(request, supervisor, signals, deadline)
    if loaded is None:  # stopped (or out of time) while waiting for a bundle
        return _no_frames(started, request, signals)
    config = loaded.config
    supervisor.configure(state_file=loaded.state_file, state_interval=config.service.state_interval,
                         edgetpu_setting=config.model.edgetpu)
    with signals.interruptible():
        outputs = build_outputs(config)
    setup = RunningSetup(request, loaded, outputs)

    def apply(runner: Runner, prepared: Prepared) -> str:
        status = setup.apply(runner, supervisor, prepared)
        new = prepared.config
        supervisor.configure(state_file=prepared.loaded.state_file, state_interval=new.service.state_interval,
                             edgetpu_setting=new.model.edgetpu)
        reloader.timeout = new.service.reload_timeout
        return status

    reloader = Reloader(setup.prepare, timeout=config.service.reload_timeout, discard=setup.discard)
    supervisor.attach_reloader(reloader, apply)
    runner = Runner(loaded.bundle, loaded.classifier, config.source, config.decision,
                    outputs=[*outputs.values(), supervisor], limits=limits)
    signals.on_stop(runner.stop)
    signals.on_reload(reloader.request)
    try:
        summary = runner.run()
    except EdgeclassError as exc:
        supervisor.failed(str(exc))
        raise
    finally:
        for output in runner.outputs:
            output.close()
    summary["source"] = runner.source_description()
    summary["stopped"] = signals.stopped_by
    return summary


def _no_frames(started: float, request: RunRequest, signals: RunSignals) -> dict:
    """The summary of a run that ended before its frame loop started (stopped, or out of time)."""
    source = (request.cli_values.get("source") or {}).get("source")
    return {"frames": 0, "seconds": round(time.monotonic() - started, 3), "fps": 0.0, "first_result_s": None,
            "latency_ms_p50": 0.0, "latency_ms_p95": 0.0, "infer_ms_p50": 0.0, "dropped": 0, "reopens": 0,
            "label": None, "source": redact(str(source)) if source is not None else "the configured source",
            "stopped": signals.stopped_by}

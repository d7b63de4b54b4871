"""``edgeclass run`` put together: config, bundle, outputs, runner, supervision, signals, reloads.

The command line parses options into the nested config layout; this module
does the rest, the same way interactively and under systemd.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

from ..errors import EdgeclassError
from ..outputs.factory import build_outputs, rebuild_outputs
from ..pipeline.loop import RunLimits, Runner, install_stop_signals
from . import systemd
from .hotreload import Reloader
from .runconfig import Loaded, RunRequest, load_run, restart_only_changes
from .supervise import Liveness, Supervisor

log = logging.getLogger(__name__)


def run_service(config_path: Path | None, cli_values: Mapping[str, Mapping[str, Any]], *,
                limits: RunLimits = RunLimits()) -> dict:
    """Run until stopped or done; the runner's summary dict (plus ``source``).

    With a config file the process behaves as the service: a camera absent at
    start is retried (it may still be booting), the state file is written.
    """
    request = RunRequest(config_path, cli_values)
    loaded = load_run(request)
    config = loaded.config
    watchdog = systemd.Watchdog.from_env()
    if watchdog.enabled:
        log.info("systemd watchdog: %g s; pinging every %g s while frames are classified or the source is "
                 "being recovered", watchdog.interval, watchdog.ping_every)
    outputs = build_outputs(config)
    current = {"config": config, "outputs": outputs}

    def apply(runner: Runner, new: Loaded) -> str:
        old = current["config"]
        for key in restart_only_changes(old, new.config):
            log.warning("%s changed in the config: takes effect on restart (systemctl restart edgeclass)", key)
        current["outputs"] = rebuild_outputs(current["outputs"], old, new.config, runner)
        runner.outputs = [*current["outputs"].values(), supervisor]
        runner.set_decision(new.config.decision)
        runner.swap_bundle(new.bundle, new.classifier)
        supervisor.state_interval = new.config.service.state_interval
        if new.state_file is not None:
            supervisor.state_file = new.state_file
        current["config"] = new.config
        return f"reloaded: running {new.bundle.name} ({new.bundle.path})"

    reloader = Reloader(lambda: load_run(request))
    source = config.source
    supervisor = Supervisor(
        watchdog=watchdog,
        liveness=Liveness.for_options(source.stall_timeout, source.reopen_backoff_max, now=time.monotonic()),
        state_file=loaded.state_file, state_interval=config.service.state_interval,
        reloader=reloader, apply_reload=apply,
    )
    runner = Runner(loaded.bundle, loaded.classifier, source, config.decision,
                    outputs=[*outputs.values(), supervisor], limits=limits)
    restore = install_stop_signals(runner, on_stop=supervisor.stopping, on_reload=reloader.request)
    try:
        summary = runner.run()
    except EdgeclassError as exc:
        supervisor.failed(str(exc))
        raise
    finally:
        restore()
        for output in runner.outputs:
            output.close()
    summary["source"] = runner.source_description()
    return summary

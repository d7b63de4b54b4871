"""``edgeclass run`` put together: config, bundle, sink, runner, supervision, signals, reloads.

The command line parses options into the nested config layout; this module
does the rest, the same way interactively and under systemd.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

from . import systemd
from .errors import EdgeclassError
from .hotreload import Reloader
from .runconfig import Loaded, RunRequest, load_run, restart_only_changes, run_options
from .runtime import HookChain, Runner, install_stop_signals
from .sinks import open_sink
from .supervise import Liveness, ServiceHooks

log = logging.getLogger(__name__)


def _uncertain_saver(config):
    u = config.uncertain
    if u.dir is None:
        return None
    from .uncertain import UncertainSaver

    log.info("saving frames with a top score below %g into %s (at most %d a minute, %g MB)",
             u.threshold, u.dir, u.max_per_minute, u.max_mb)
    return UncertainSaver(u.dir, threshold=u.threshold, max_per_minute=u.max_per_minute, max_mb=u.max_mb)


def run_service(config_path: Path | None, cli_values: Mapping[str, Mapping[str, Any]], *,
                max_frames: int | None = None, duration: float | None = None, loop: bool = False,
                realtime: bool = False, wait_for_source: bool = False) -> dict:
    """Run until stopped or done; the runner's summary dict (plus ``source``).

    With a config file the process behaves as the service: a camera absent at
    start is retried (it may still be booting), the state file is written.
    """
    request = RunRequest(config_path, cli_values)
    loaded = load_run(request)
    extras = dict(max_frames=max_frames, duration=duration, loop=loop, realtime=realtime,
                  wait_for_source=wait_for_source or request.service)
    config = loaded.config
    options = run_options(config, **extras)
    watchdog = systemd.Watchdog.from_env()
    if watchdog.enabled:
        log.info("systemd watchdog: %g s; pinging every %g s while frames are classified or the source is "
                 "being recovered", watchdog.interval, watchdog.ping_every)
    current = {"config": config}

    def apply(runner: Runner, new: Loaded) -> str:
        old = current["config"]
        for key in restart_only_changes(old, new.config):
            log.warning("%s changed in the config: takes effect on restart (systemctl restart edgeclass)", key)
        runner.set_options(run_options(new.config, **extras))
        runner.swap_bundle(new.bundle, new.classifier)
        hooks.state_interval = new.config.service.state_interval
        if new.state_file is not None:
            hooks.state_file = new.state_file
        if new.config.uncertain != old.uncertain:
            chain.hooks = [h for h in (hooks, _uncertain_saver(new.config)) if h is not None]
        current["config"] = new.config
        return f"reloaded: running {new.bundle.name} ({new.bundle.path})"

    reloader = Reloader(lambda: load_run(request))
    hooks = ServiceHooks(
        watchdog=watchdog,
        liveness=Liveness.for_options(options.stall_timeout, options.reopen_backoff_max, now=time.monotonic()),
        state_file=loaded.state_file, state_interval=config.service.state_interval,
        reloader=reloader, apply_reload=apply,
    )
    chain = HookChain(hooks, _uncertain_saver(config))
    with open_sink(config.output.format, config.output.path) as sink:
        runner = Runner(loaded.bundle, config.source.source, sink, options, hooks=chain, classifier=loaded.classifier)
        restore = install_stop_signals(runner, on_stop=hooks.stopping, on_reload=reloader.request)
        try:
            summary = runner.run()
        except EdgeclassError as exc:
            hooks.failed(str(exc))
            raise
        finally:
            restore()
    summary["source"] = config.source.source
    return summary

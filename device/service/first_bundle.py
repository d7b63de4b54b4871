"""Start-up without a usable bundle: the service waits for one instead of crash-looping.

Right after ``edgeclass service install`` nothing has been deployed, so
``/var/lib/edgeclass/current`` does not exist. Exiting would have systemd
restart the service until ``StartLimitBurst`` is spent and the unit ends
``failed`` ("Start request repeated too quickly"), and the first
``edgeclass deploy`` would then find a failed unit. Instead the service
starts and waits: ``READY=1`` with ``STATUS=waiting for a bundle: ...``, the
watchdog fed, the state file saying why. It tries again as soon as the
bundle path (or what it points to, or the config file) changes, and at once
on SIGHUP (``systemctl reload``, which deploy sends). A bundle that exists
but is refused (a hash mismatch, a model the interpreter rejects) is waited
out the same way, with the refusal as the state file's ``last_error``: a
restart would not repair it, a new deploy will.

Interactive runs (no ``--config``) never wait: a wrong ``--bundle`` is an
error at once.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..errors import BundleError, ModelError
from .runconfig import Loaded, NoBundleYet, RunRequest, load_run, resolve_config
from .signals import RunSignals
from .supervise import Supervisor

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks at the bundle path while waiting


def load_first_bundle(request: RunRequest, supervisor: Supervisor, signals: RunSignals,
                      deadline: float | None = None) -> Loaded | None:
    """The loaded, verified bundle; as a service, waits for a usable one.

    ``None`` when a stop signal or the ``deadline`` (monotonic) came first.
    Errors other than a missing or refused bundle (a bad config file) are
    raised, as are all errors of an interactive run.
    """
    while True:
        signals.reload_requested.clear()  # a SIGHUP from now on means "look again" after this attempt
        try:
            with signals.interruptible():
                return load_run(request)
        except (BundleError, ModelError) as exc:
            if not request.service:
                raise
            problem = exc
        bundle_path = resolve_config(request).model.bundle
        seen = _marker(bundle_path, request.config_path)
        if isinstance(problem, NoBundleYet):
            status = f"waiting for a bundle: {problem}"
            log.warning("%s", status)
            supervisor.waiting(status)
        else:
            status = f"waiting for a usable bundle: {bundle_path} was refused: {problem}"
            log.error("%s", status)
            supervisor.waiting(f"waiting for a usable bundle (refused: {problem})", error=str(problem))
        # Look every POLL seconds, and wake often enough to ping a short watchdog in time.
        tick = min(POLL, supervisor.watchdog.ping_every or POLL)
        while True:
            signals.wakeup.wait(tick)
            signals.wakeup.clear()
            if signals.stopping:
                return None
            if signals.reload_requested.is_set():
                break  # systemctl reload: try again now
            if deadline is not None and time.monotonic() >= deadline:
                return None
            supervisor.wait_tick()
            if _marker(bundle_path, request.config_path) != seen:
                break  # the bundle (or the config) changed: try again


def _marker(bundle_path: Path, config_path: Path | None) -> tuple:
    """What changes when a bundle is deployed or the config edited: targets, names, sizes, times."""
    def entry(path: Path) -> tuple:
        try:
            st = os.stat(path)
        except OSError:
            return (str(path), None)
        return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)

    marker = [entry(config_path)] if config_path is not None else []
    real = Path(os.path.realpath(bundle_path))
    marker.append((str(real), entry(real)))
    try:
        for name in sorted(os.listdir(real)):
            marker.append(entry(real / name))
    except OSError:
        pass
    return tuple(marker)

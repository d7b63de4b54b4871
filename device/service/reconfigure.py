"""What is running, and how a reload replaces it: all of it, or none of it.

:class:`RunningSetup` holds the configuration in force, the bundle and the
outputs. A reload has two halves:

- :meth:`~RunningSetup.prepare`, in the reload thread, does everything that
  can fail: it re-reads the configuration, verifies the bundle with a test
  inference (:func:`~edgeclass.device.service.runconfig.load_run`), works out
  which settings changed, and builds the outputs whose settings changed. A
  failure anywhere leaves nothing behind (the outputs it built are closed) and
  nothing running is touched.
- :meth:`~RunningSetup.apply`, in the frame loop between two frames, swaps the
  prepared pieces in. Only steps that cannot fail remain for it, except
  starting the new outputs, which comes first and undoes itself.

The log then says exactly what runs: the bundle and its path, the model and
where it runs, every setting that changed, and, separately, the settings
that wait for a restart.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from ..outputs.factory import build_outputs, changed_outputs, close_outputs, reconfigurable, replace_outputs
from ..pipeline.decide import make_decider
from ..pipeline.loop import Output, Runner
from ..pipeline.preprocess import Preprocessor
from .changes import Change, changed_settings, hold_for_restart, summary
from .config import DeviceConfig
from .runconfig import Loaded, RunRequest, load_run

log = logging.getLogger(__name__)

RESTART_HINT = "sudo systemctl restart edgeclass"


class Prepared(NamedTuple):
    """A reload ready to be swapped in."""

    loaded: Loaded  # the new bundle, verified, and the new configuration as read
    config: DeviceConfig  # what will run: the new configuration with restart-only settings held
    applied: list[Change]  # settings that change now
    pending: list[Change]  # settings that change only with a restart
    outputs: list[str]  # outputs whose settings changed (rebuilt, or turned off)
    fresh: dict[str, Output]  # the rebuilt ones, not started yet


class RunningSetup:
    """The configuration, bundle and outputs in force for one run."""

    def __init__(self, request: RunRequest, loaded: Loaded, outputs: dict[str, Output]) -> None:
        self.request = request
        self.loaded = loaded
        self.config = loaded.config
        self.outputs = outputs

    def prepare(self) -> Prepared:
        """Everything a reload does that can fail (reload thread); raises the first problem, by name."""
        loaded = load_run(self.request)
        every = changed_settings(self.config, loaded.config)
        config = hold_for_restart(self.config, loaded.config)
        # The loop builds these from the new bundle when it swaps: prove here that they build.
        Preprocessor(loaded.bundle.input)
        make_decider(loaded.bundle.labels, config.decision)
        names = changed_outputs(self.config, config)
        in_place = reconfigurable(self.outputs, names)  # the HTTP server keeps its port: not built twice
        fresh = build_outputs(config, [n for n in names if n not in in_place])  # all or none
        return Prepared(loaded, config, [c for c in every if not c.restart], [c for c in every if c.restart],
                        names, fresh)

    def discard(self, prepared: Prepared) -> None:
        """Release a prepared reload that will never be applied (it finished after its timeout)."""
        close_outputs(prepared.fresh.values())

    def apply(self, runner: Runner, supervisor: Output, prepared: Prepared) -> str:
        """Swap a prepared reload in between frames (frame loop); returns the one-line status for systemd."""
        self.outputs = replace_outputs(self.outputs, prepared.fresh, prepared.outputs, runner,
                                       prepared.config)  # may refuse: first
        runner.outputs = [*self.outputs.values(), supervisor]
        runner.swap_bundle(prepared.loaded.bundle, prepared.loaded.classifier)
        runner.set_decision(prepared.config.decision)
        before = self.loaded.bundle
        self.loaded, self.config = prepared.loaded, prepared.config
        bundle, classifier = prepared.loaded.bundle, prepared.loaded.classifier
        same = "unchanged" if bundle.path == before.path else f"was {before.name} ({before.path})"
        log.info("reloaded: running bundle %s (%s; %s; bundle %s); settings changed: %s",
                 bundle.name, bundle.path, classifier.describe(), same, summary(prepared.applied))
        if prepared.pending:
            log.warning("reloaded, but these settings need a restart and are not applied yet (%s): %s",
                        RESTART_HINT, summary(prepared.pending))
        status = f"reloaded: running {bundle.name}"
        if prepared.pending:
            status += f"; needs a restart for {', '.join(c.key for c in prepared.pending)}"
        return status

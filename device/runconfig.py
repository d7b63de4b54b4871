"""What ``edgeclass run`` runs: the layered settings resolved, the bundle validated.

One function, :func:`load_run`, serves the start and every SIGHUP reload, so
both apply the same precedence::

    built-in defaults < bundle.json "defaults" < --config file < command line

Without ``--config`` the built-in defaults are the interactive ones
(``--format human``, ``--emit all``, no stats records, no state file); with a
config file they are the service's (``jsonl``, ``changes``, stats every 60 s,
the state file in /run). The bundle's defaults can only be read once the
bundle is known, so the bundle path is resolved from the other layers first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .bundle import Bundle
from .classifier import Classifier, EdgeTPU
from .config import DeviceConfig, build, bundle_defaults, check_values, read_config_file, resolve
from .hotreload import validate_bundle
from .runtime import Emit, RunOptions

# Interactive use keeps the terminal-friendly defaults `edgeclass run` always had.
INTERACTIVE_DEFAULTS: dict[str, dict[str, Any]] = {"output": {"format": "human", "emit": "all", "stats_interval": 0.0}}


@dataclass(frozen=True)
class RunRequest:
    """What the command line asked for: a config file (or not) and the options given (``None`` = not given)."""

    config_path: Path | None = None
    cli_values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def service(self) -> bool:
        """Whether this runs as a service (a config file was given)."""
        return self.config_path is not None

    def gave(self, section: str, key: str) -> bool:
        return (self.cli_values.get(section) or {}).get(key) is not None


@dataclass(frozen=True)
class Loaded:
    """The effective config and a bundle whose model has already classified a test frame."""

    config: DeviceConfig
    bundle: Bundle
    classifier: Classifier
    state_file: Path | None = None  # always as a service; interactively only when --state-file was given


def resolve_config(request: RunRequest, bundle: Bundle | None = None) -> DeviceConfig:
    """The effective config; ``bundle`` adds its manifest's defaults as a layer."""
    file_values = read_config_file(request.config_path) if request.config_path is not None else {}
    cli = check_values(request.cli_values, lambda s, k: "command line", Path.cwd())
    base = DeviceConfig().to_dict()
    if not request.service:
        base = resolve(base, INTERACTIVE_DEFAULTS)
    bundle_layer: dict = {}
    if bundle is not None:
        raw = bundle_defaults(bundle.manifest)
        raw.get("model", {}).pop("bundle", None)  # a bundle cannot point elsewhere
        bundle_layer = check_values(raw, lambda s, k: f"{bundle.path}/bundle.json defaults", bundle.path)
    return build(resolve(base, bundle_layer, file_values, cli))


def load_run(request: RunRequest) -> Loaded:
    """Read the config, then load and fully validate the bundle it names (hashes, shapes, a test inference).

    Raises :class:`~edgeclass.device.errors.EdgeclassError` naming the file on
    any problem. The bundle is loaded through its resolved path, so a
    ``current`` symlink switched later does not change the files under a
    running model, and the state file can name the exact release.
    """
    first = resolve_config(request)
    path = Path(os.path.realpath(first.model.bundle))
    from .bundle import load_bundle

    bundle = load_bundle(path)
    config = resolve_config(request, bundle)
    bundle, classifier = validate_bundle(path, threads=config.model.threads, edgetpu=EdgeTPU(config.model.edgetpu),
                                         bundle=bundle)
    wanted = request.service or request.gave("service", "state_file")
    return Loaded(config, bundle, classifier, config.service.state_file if wanted else None)


def run_options(config: DeviceConfig, *, max_frames: int | None = None, duration: float | None = None,
                loop: bool = False, realtime: bool = False, wait_for_source: bool = False) -> RunOptions:
    """The runner's options from the effective config plus the options only the command line has."""
    m, s, d, o = config.model, config.source, config.decision, config.output
    return RunOptions(
        threads=m.threads, edgetpu=EdgeTPU(m.edgetpu), top_k=d.top_k, threshold=d.threshold, smoothing=d.smoothing,
        emit=Emit(o.emit), heartbeat=d.heartbeat, stats_interval=o.stats_interval, max_frames=max_frames,
        duration=duration, stall_timeout=s.stall_timeout, give_up_after=s.give_up_after or None,
        reopen_backoff_max=s.reopen_backoff_max, wait_for_source=wait_for_source, loop=loop, realtime=realtime,
        width=s.width, height=s.height, fps=s.fps,
    )


def restart_only_changes(old: DeviceConfig, new: DeviceConfig) -> list[str]:
    """Settings a reload cannot apply to a running loop (the camera, the output stream), as ``section.key``."""
    changed = []
    for section, keys in (("source", None), ("output", ("format", "path"))):
        a, b = getattr(old, section), getattr(new, section)
        for key in keys or a.__dataclass_fields__:
            if getattr(a, key) != getattr(b, key):
                changed.append(f"{section}.{key}")
    return changed

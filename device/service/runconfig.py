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

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..bundle import Bundle, load_bundle
from ..pipeline.classifier import Classifier, EdgeTPU
from ..pipeline.verify import verify_bundle
from .config import DeviceConfig, build, bundle_defaults, check_values, read_config_file, resolve

# Interactive use keeps the terminal-friendly defaults `edgeclass run` always had.
INTERACTIVE_DEFAULTS: dict[str, dict[str, Any]] = {"output": {"format": "human", "emit": "all", "stats_interval": 0.0}}
# A service at boot may start before its camera: wait for it rather than fail.
SERVICE_DEFAULTS: dict[str, dict[str, Any]] = {"source": {"wait_for_source": True}}


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
    base = resolve(DeviceConfig().to_dict(), SERVICE_DEFAULTS if request.service else INTERACTIVE_DEFAULTS)
    bundle_layer: dict = {}
    if bundle is not None:
        # Decision keys only (bundle_defaults): no path in it, so no directory to resolve against.
        bundle_layer = check_values(bundle_defaults(bundle.manifest), lambda s, k: f"{bundle.path}/bundle.json defaults",
                                    bundle.path)
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
    bundle = load_bundle(path)
    config = resolve_config(request, bundle)
    bundle, classifier, _ = verify_bundle(path, threads=config.model.threads, edgetpu=EdgeTPU(config.model.edgetpu),
                                          bundle=bundle)
    wanted = request.service or request.gave("service", "state_file")
    return Loaded(config, bundle, classifier, config.service.state_file if wanted else None)


def restart_only_changes(old: DeviceConfig, new: DeviceConfig) -> list[str]:
    """Settings a reload cannot apply to a running loop (the camera, the output stream), as ``section.key``."""
    changed = []
    for section in dataclasses.fields(old):
        a, b = getattr(old, section.name), getattr(new, section.name)
        for f in dataclasses.fields(a):
            if f.metadata.get("restart") and getattr(a, f.name) != getattr(b, f.name):
                changed.append(f"{section.name}.{f.name}")
    return changed

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

from ..bundle import Bundle, load_bundle
from ..errors import BundleError
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


class NoBundleYet(BundleError):
    """The configured bundle path does not exist (yet): nothing was deployed, or ``current`` is dangling."""


@dataclass(frozen=True)
class Loaded:
    """The effective config and a bundle whose model has already classified a test frame."""

    config: DeviceConfig
    bundle: Bundle
    classifier: Classifier
    state_file: Path | None = None  # always as a service; interactively only when --state-file was given


def resolve_config(request: RunRequest, bundle: Bundle | None = None,
                   file_values: dict[str, dict[str, Any]] | None = None) -> DeviceConfig:
    """The effective config; ``bundle`` adds its manifest's defaults as a layer.

    ``file_values``: the config file's layer already read (:func:`read_file_layer`), so
    one load sees one version of the file; read here when not given.
    """
    if file_values is None:
        file_values = read_file_layer(request)
    cli = check_values(request.cli_values, lambda s, k: "command line", Path.cwd())
    base = resolve(DeviceConfig().to_dict(), SERVICE_DEFAULTS if request.service else INTERACTIVE_DEFAULTS)
    bundle_layer: dict = {}
    if bundle is not None:
        # Decision keys only (bundle_defaults): no path in it, so no directory to resolve against.
        bundle_layer = check_values(bundle_defaults(bundle.manifest), lambda s, k: f"{bundle.path}/bundle.json defaults",
                                    bundle.path)
    return build(resolve(base, bundle_layer, file_values, cli))


def read_file_layer(request: RunRequest) -> dict[str, dict[str, Any]]:
    """The config file's values (empty without ``--config``)."""
    return read_config_file(request.config_path) if request.config_path is not None else {}


def state_file_for(request: RunRequest, config: DeviceConfig) -> Path | None:
    """The state file to write: always as a service; interactively only when ``--state-file`` was given."""
    wanted = request.service or request.gave("service", "state_file")
    return config.service.state_file if wanted else None


def load_run(request: RunRequest) -> Loaded:
    """Read the config, then load and fully validate the bundle it names (hashes, shapes, a test inference).

    Raises :class:`~edgeclass.device.errors.EdgeclassError` naming the file on
    any problem; as a service, :class:`NoBundleYet` when the bundle path does
    not exist at all (the service then waits for a first deploy). The bundle is loaded
    through its resolved path, so a ``current`` symlink switched later does
    not change the files under a running model, and the state file can name
    the exact release.
    """
    file_values = read_file_layer(request)  # once: both layers below see the same file
    first = resolve_config(request, file_values=file_values)
    if request.service and not os.path.exists(first.model.bundle):  # follows symlinks: a dangling `current` is "no bundle" too
        raise NoBundleYet(f"{first.model.bundle}: no bundle there yet (deploy one from the workstation with "
                          "`edgeclass deploy BUNDLE HOST`, or on this device `edgeclass bundle install BUNDLE "
                          f"--root {Path(first.model.bundle).parent}`)")
    path = Path(os.path.realpath(first.model.bundle))
    bundle = load_bundle(path)
    config = resolve_config(request, bundle, file_values)
    bundle, classifier, _ = verify_bundle(path, threads=config.model.threads, edgetpu=EdgeTPU(config.model.edgetpu),
                                          bundle=bundle)
    return Loaded(config, bundle, classifier, state_file_for(request, config))

"""Choosing the outputs from the configuration, by name.

Every output class registered here has a ``name``, the config ``sections``
it reads (a reload rebuilds it when one of them changes), and ``from_config(config)``, which returns the output, or ``None``
when the configuration leaves it off (an output that is off costs the frame
loop nothing: it is not in the list). ``config`` is the service's
configuration, an object with one attribute per section.
"""

from __future__ import annotations

import logging
from typing import Iterable

from ..pipeline.loop import Output
from .mqtt import MqttOutput
from .stream import StreamOutput
from .uncertain import UncertainSaver

log = logging.getLogger(__name__)

# Order is the order the loop calls them in: the result line first.
REGISTRY: dict[str, type] = {
    "stream": StreamOutput,
    "uncertain": UncertainSaver,
    "mqtt": MqttOutput,
}


def build_outputs(config, names: Iterable[str] | None = None) -> dict[str, Output]:
    """The outputs that ``config`` turns on, by name, in registry order."""
    wanted = set(REGISTRY if names is None else names)
    built: dict[str, Output] = {}
    for name, cls in REGISTRY.items():
        if name not in wanted:
            continue
        output = cls.from_config(config)
        if output is not None:
            built[name] = output
    return built


def changed_outputs(old, new) -> list[str]:
    """Names of the registered outputs whose config sections differ between ``old`` and ``new``."""
    return [name for name, cls in REGISTRY.items()
            if any(getattr(old, s) != getattr(new, s) for s in cls.sections)]


def rebuild_outputs(current: dict[str, Output], old, new, run) -> dict[str, Output]:
    """Apply a reloaded config: outputs whose sections changed are closed and built again.

    New ones are built first, so a refused setting (a folder that cannot be
    created, a certificate that does not load) leaves the running outputs as
    they are. The old ones are closed before the new ones start: an old MQTT
    connection says "offline" before the new one says "online", an old
    listener frees its port.
    """
    names = changed_outputs(old, new)
    if not names:
        return current
    fresh = build_outputs(new, names)
    for name in names:
        if name in current:
            current[name].close()
    for output in fresh.values():
        output.start(run)
    result: dict[str, Output] = {}
    for name in REGISTRY:
        if name in names:
            if name in fresh:
                result[name] = fresh[name]
        elif name in current:
            result[name] = current[name]
    for name in names:
        log.info("output %s: %s", name, "restarted with the new settings" if name in fresh else "off")
    return result

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
from .http import HttpOutput
from .mqtt import MqttOutput
from .stream import StreamOutput
from .uncertain import UncertainSaver

log = logging.getLogger(__name__)

# Order is the order the loop calls them in: the result line first.
REGISTRY: dict[str, type] = {
    "stream": StreamOutput,
    "uncertain": UncertainSaver,
    "mqtt": MqttOutput,
    "http": HttpOutput,
}


def build_outputs(config, names: Iterable[str] | None = None) -> dict[str, Output]:
    """The outputs that ``config`` turns on, by name, in registry order.

    All or none: when one cannot be built (a folder that cannot be created, a
    file that cannot be opened), those already built are closed and the error
    is raised.
    """
    wanted = set(REGISTRY if names is None else names)
    built: dict[str, Output] = {}
    try:
        for name, cls in REGISTRY.items():
            if name not in wanted:
                continue
            output = cls.from_config(config)
            if output is not None:
                built[name] = output
    except BaseException:
        close_outputs(built.values())
        raise
    return built


def close_outputs(outputs: Iterable[Output]) -> None:
    """Close each output (closing is safe to repeat)."""
    for output in outputs:
        output.close()


def changed_outputs(old, new) -> list[str]:
    """Names of the registered outputs whose config sections differ between ``old`` and ``new``."""
    return [name for name, cls in REGISTRY.items()
            if any(getattr(old, s) != getattr(new, s) for s in cls.sections)]


def reconfigurable(current: dict[str, Output], names: Iterable[str]) -> list[str]:
    """The outputs among ``names`` that apply new settings in place (``reconfigure(config)``), not rebuilt.

    The HTTP server is one: it keeps its port and its open pages.
    """
    return [name for name in names if getattr(current.get(name), "reconfigure", None) is not None]


def replace_outputs(current: dict[str, Output], fresh: dict[str, Output], names: Iterable[str],
                    run, config=None) -> dict[str, Output]:
    """Swap in ``fresh`` (built by ``build_outputs(new, names)``) for the outputs named in ``names``.

    Outputs that apply settings in place (:func:`reconfigurable`) get
    ``reconfigure(config)`` first; each checks everything before it changes
    anything, and one that returns False is off now. The fresh outputs are
    then started on ``run``; if one refuses, all fresh ones are closed and the
    replaced outputs are left as they were. Only then are the replaced outputs
    closed. A name in ``names`` but not in ``fresh`` is an output the new
    settings turn off.
    """
    names = list(names)
    in_place = [name for name in reconfigurable(current, names) if name not in fresh]
    kept = {name for name in in_place if current[name].reconfigure(config)}
    names = [name for name in names if name not in kept]
    # One at a time: an MQTT session (the old one's "offline" must come before
    # the new one's "online"). Their start only queues work, so they go last,
    # after every output whose start can refuse.
    exclusive = [name for name in fresh if getattr(fresh[name], "one_at_a_time", False)]
    try:
        for name, output in fresh.items():
            if name not in exclusive:
                output.start(run)
        for name in exclusive:
            if name in current:
                current[name].close()
            fresh[name].start(run)
    except BaseException:
        close_outputs(fresh.values())
        raise
    result: dict[str, Output] = {}
    for name in REGISTRY:
        if name in names:
            if name in current:
                current[name].close()  # repeat-safe: a one-at-a-time output is closed already
            if name in fresh:
                result[name] = fresh[name]
        elif name in current:
            result[name] = current[name]
    for name in names:
        log.info("output %s: %s", name, "restarted with the new settings" if name in fresh else "off")
    return result

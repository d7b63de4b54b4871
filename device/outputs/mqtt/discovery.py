"""Home Assistant MQTT discovery: the retained config messages that make a Pi appear as one HA device.

Follows Home Assistant's MQTT discovery documentation,
https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery (discovery
topic ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``, the
``device`` and ``origin`` mappings, availability) and the MQTT sensor and
binary sensor pages, https://www.home-assistant.io/integrations/sensor.mqtt/
and https://www.home-assistant.io/integrations/binary_sensor.mqtt/
(``value_template``, ``json_attributes_topic``, ``entity_category``,
``expire_after``). One single-component config per entity, all retained and
sharing one ``device`` block, so Home Assistant groups them under one device
per topic prefix (one per Pi by default)::

    homeassistant/sensor/edgeclass_raspberrypi/label/config       the decided label; score, top_k as attributes
    homeassistant/sensor/edgeclass_raspberrypi/fps/config         diagnostic: frames per second
    homeassistant/sensor/edgeclass_raspberrypi/confidence/config  diagnostic: rolling mean top score, %
    ...

Every entity uses ``PREFIX/availability``, so all of them turn "unavailable"
when the service stops or its Last Will fires. Entity names are short
("Label", "Frame rate"): Home Assistant prefixes the device's name.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import NamedTuple

from ... import __version__
from .messages import OFFLINE, ONLINE, topics_under

_NODE_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")  # HA: node_id and object_id are [a-zA-Z0-9_-]
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")  # "Raspberry Pi 4 Model B Rev 1.4" on a Pi


class Entity(NamedTuple):
    """One Home Assistant entity: which component, which topic, how its state is read from the JSON."""

    component: str  # "sensor" or "binary_sensor"
    object_id: str
    name: str
    topic: str  # "state" or "diagnostics"
    value_template: str
    extra: dict


# A template rendering "None" makes an MQTT sensor "unknown" (no frames in the window yet).
def _percent(key: str) -> str:
    return f"{{{{ none if value_json.{key} is none else (value_json.{key} * 100) | round(1) }}}}"


DIAGNOSTIC = {"entity_category": "diagnostic"}
ENTITIES = (
    Entity("sensor", "label", "Label", "state", "{{ value_json.label }}", {
        "icon": "mdi:image-search",
        "json_attributes_template": "{{ {'score': value_json.score, 'top_k': value_json.top_k, "
                                    "'time': value_json.time} | tojson }}",
    }),
    Entity("sensor", "fps", "Frame rate", "diagnostics", "{{ value_json.fps }}", {
        **DIAGNOSTIC, "unit_of_measurement": "fps", "state_class": "measurement", "icon": "mdi:speedometer"}),
    Entity("sensor", "confidence", "Confidence", "diagnostics", _percent("mean_top_score"), {
        **DIAGNOSTIC, "unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:gauge"}),
    Entity("binary_sensor", "confidence_dropped", "Confidence dropped", "diagnostics",
           "{{ 'ON' if value_json.confidence_dropped else 'OFF' }}", {**DIAGNOSTIC, "device_class": "problem"}),
    Entity("sensor", "uncertain", "Uncertain frames", "diagnostics", _percent("uncertain_rate"), {
        **DIAGNOSTIC, "unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:help-circle-outline"}),
    Entity("sensor", "latency", "Latency p95", "diagnostics", "{{ value_json.latency_ms_p95 }}", {
        **DIAGNOSTIC, "unit_of_measurement": "ms", "device_class": "duration", "state_class": "measurement"}),
    Entity("sensor", "bundle", "Model", "diagnostics", "{{ value_json.bundle }}", {**DIAGNOSTIC, "icon": "mdi:brain"}),
)


def node_id(prefix: str) -> str:
    """The HA node id (and device identifier) of a topic prefix: ``edgeclass/raspberrypi`` -> ``edgeclass_raspberrypi``."""
    return _NODE_UNSAFE.sub("_", prefix).strip("_") or "edgeclass"


def device_model() -> str:
    """The board's name from the device tree (a Pi), else the OS and machine (``Linux x86_64``)."""
    try:
        model = DEVICE_TREE_MODEL.read_bytes().rstrip(b"\x00\n").decode("utf-8", "replace").strip()
    except OSError:
        model = ""
    return model or f"{platform.system()} {platform.machine()}"


def discovery_messages(prefix: str, discovery_prefix: str = "homeassistant", *, qos: int = 1,
                       heartbeat: float = 10.0) -> list[tuple[str, dict]]:
    """``(topic, config)`` for every entity of the device publishing under ``prefix``.

    The label expires (turns "unknown") after three missed heartbeats: the
    process is alive (no Last Will) but has stopped deciding, e.g. while a
    camera is being reopened.
    """
    topics = topics_under(prefix)
    node = node_id(prefix)
    device = {
        "identifiers": [node],
        "name": prefix.replace("/", " "),
        "model": device_model(),
        "sw_version": __version__,
    }
    messages = []
    for entity in ENTITIES:
        config = {
            "name": entity.name,
            "unique_id": f"{node}_{entity.object_id}",
            "state_topic": getattr(topics, entity.topic),
            "value_template": entity.value_template,
            "availability_topic": topics.availability,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "qos": qos,
            "device": device,
            "origin": {"name": "edgeclass", "sw_version": __version__},
            **entity.extra,
        }
        if entity.object_id == "label":
            config["json_attributes_topic"] = topics.state
            config["expire_after"] = max(30, round(3 * heartbeat))
        messages.append((f"{discovery_prefix}/{entity.component}/{node}/{entity.object_id}/config", config))
    return messages

"""MQTT with Home Assistant discovery: decisions where home-automation tools read them.

Off unless ``[mqtt] url`` is set (``edgeclass run --mqtt mqtt://HOST``).
The modules, one job each:

- :mod:`.config`: the ``[mqtt]`` section and the broker URL;
- :mod:`.messages`: the topics under the prefix and the diagnostics record;
- :mod:`.discovery`: Home Assistant's retained discovery configs;
- :mod:`.link`: the broker connection and its thread (paho-mqtt, imported
  only when MQTT is on);
- :mod:`.output`: :class:`MqttOutput`, what the frame loop calls.
"""

from .output import MqttOutput

__all__ = ["MqttOutput"]

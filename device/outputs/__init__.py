"""edgeclass.device.outputs: where decisions and frames go.

Owns: the implementations of :class:`edgeclass.device.pipeline.loop.Output`
(each receives every classified ``(frame, decision)``) and the factory that
builds them from the configuration: the JSON-lines / human result stream
(:mod:`.stream`), the uncertain-frame saver (:mod:`.uncertain`) and MQTT
with Home Assistant discovery (:mod:`.mqtt`).

May import: ``edgeclass.device.pipeline`` (its types), ``bundle``, ``errors``,
``files``. Never the service, the fleet or the CLI.
"""

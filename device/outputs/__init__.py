"""edgeclass.device.outputs: where decisions and frames go.

Owns: the implementations of :class:`edgeclass.device.pipeline.loop.Output`
(each receives every classified ``(frame, decision)``) and the factory that
builds them from the configuration (:mod:`.factory`, on the small base in
:mod:`.base` for outputs that hand work to a thread): the JSON-lines / human
result stream (:mod:`.stream`), the uncertain-frame saver (:mod:`.uncertain`),
MQTT with Home Assistant discovery (:mod:`.mqtt`), and the HTTP server with
the live, collect and review pages, API, streams and metrics (:mod:`.http`,
over the dataset folder of :mod:`.dataset` and the moves of :mod:`.review`).

May import: ``edgeclass.device.pipeline`` (its types), ``bundle``, ``errors``,
``files``. Never the service, the fleet or the CLI.
"""

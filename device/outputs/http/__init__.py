"""The device's web side: a live page, a JSON API, MJPEG and event streams, Prometheus ``/metrics``.

Off unless ``[http] listen`` (``edgeclass run --http HOST:PORT``) is set; then
:class:`~.output.HttpOutput` is one of the loop's outputs. Modules:

- :mod:`.config`  the ``[http]`` section;
- :mod:`.access`  the listen address and the access token off loopback;
- :mod:`.frames`  the newest frame, JPEG-encoded only while someone watches;
- :mod:`.server`  Tornado, the routes and their handlers;
- :mod:`.pages`   the HTML (``static/`` holds the script and style sheet);
- :mod:`.metrics` the Prometheus text.

The collect and review pages save into a dataset folder
(:mod:`edgeclass.device.outputs.dataset`, :mod:`edgeclass.device.outputs.review`).
"""

from .output import HttpOutput

__all__ = ["HttpOutput"]

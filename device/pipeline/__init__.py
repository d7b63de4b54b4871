"""edgeclass.device.pipeline: frames in, decisions out.

Owns: frame sources (:mod:`.sources`) and the capture thread that keeps only
the newest frame (:mod:`.capture`); image decoding (:mod:`.images`);
preprocessing as the manifest says (:mod:`.preprocess`); the interpreter
backends and the Edge TPU delegate (:mod:`.interpreter`), the classifier
built once per bundle (:mod:`.classifier`) and its verification by a test
inference (:mod:`.verify`); smoothing and thresholds (:mod:`.decide`); the
frame loop and the small :class:`~.loop.Output` interface it feeds
(:mod:`.loop`); and the file-level engines that reuse them (:mod:`.predict`,
:mod:`.wrap` for ``bundle create``).

May import: ``edgeclass.device.bundle``, ``errors``, ``files``. Never the
outputs, the service, the fleet or the CLI, and never TensorFlow.
"""

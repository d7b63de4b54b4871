"""edgeclass.device: everything the Raspberry Pi needs to classify camera frames.

This package never imports TensorFlow or Keras (the Pi installs only
``edgeclass[device]``); ``edgeclass.train`` and ``edgeclass.convert`` import
from it, never the other way round.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("edgeclass")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

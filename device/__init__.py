"""edgeclass.device: everything the Raspberry Pi needs to classify camera frames.

Rooms, each a subpackage with one job; dependencies point one way, from the
top of this list to the bottom, and nothing imports upward::

    cli       the ``edgeclass`` command (train/convert attached lazily)
    fleet     releases on the device, deploy from the workstation
    service   systemd: config file, notify + watchdog, supervision, reload, install
    outputs   where decisions and frames go (result stream, saved frames, ...)
    pipeline  frames in, decisions out: sources, capture, preprocess, model, decide, loop
    bundle    the contract: manifest schema, load + verify hashes, write
    errors, files   shared leaves: user-facing errors, atomic file writes

This package never imports TensorFlow or Keras (the Pi installs only
``edgeclass[device]``); ``edgeclass.train`` and ``edgeclass.convert`` import
from it, never the other way round.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("edgeclass")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

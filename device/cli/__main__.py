"""``python -m edgeclass.device.cli``: the same as the ``edgeclass`` command."""

from . import main

main()

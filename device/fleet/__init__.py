"""edgeclass.device.fleet: getting bundles onto devices.

Owns: versioned releases on the device with an atomic ``current`` switch and
rollback (:mod:`.releases`), and ``deploy`` from the workstation over OpenSSH
(:mod:`.deploy`).

May import: ``edgeclass.device.service``, ``pipeline``, ``bundle``,
``errors``, ``files``. Only the CLI imports it.
"""

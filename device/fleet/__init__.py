"""edgeclass.device.fleet: getting bundles onto devices.

Owns: versioned releases on the device with an atomic ``current`` switch and
rollback (:mod:`.releases`), and ``deploy`` from the workstation over OpenSSH
(:mod:`.deploy`): the ssh/scp argv and the shared connection (:mod:`.ssh`),
the remote commands spelled once (:mod:`.options`), and where a device
stands, for ``deploy --status`` and the start of every deploy
(:mod:`.device_status`).

May import: ``edgeclass.device.service``, ``pipeline``, ``bundle``,
``errors``, ``files``. Only the CLI imports it.
"""

"""edgeclass.device.service: running the frame loop under systemd.

Owns: the configuration file and its layers (:mod:`.config`,
:mod:`.runconfig`); sd_notify and the watchdog (:mod:`.systemd`);
supervision, the state file and hot reload (:mod:`.supervise`,
:mod:`.state`, :mod:`.hotreload`); the command's engine (:mod:`.run`); and
``service install`` (:mod:`.install`, with the unit and default config
shipped in ``data/``) and ``service status`` (:mod:`.health`).

May import: ``edgeclass.device.pipeline``, ``outputs``, ``bundle``, ``errors``,
``files``. Never the fleet or the CLI.
"""

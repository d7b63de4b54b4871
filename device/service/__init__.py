"""edgeclass.device.service: running the frame loop under systemd.

Owns: the configuration file and its layers (:mod:`.config`,
:mod:`.runconfig`); sd_notify and the watchdog (:mod:`.systemd`);
supervision and the state file (:mod:`.supervise`, :mod:`.state`); hot
reload, all or nothing (:mod:`.hotreload` runs it in the background with a
timeout, :mod:`.reconfigure` prepares and swaps, :mod:`.changes` says which
settings changed); waiting for a first bundle (:mod:`.first_bundle`); the
run's signals (:mod:`.signals`); the command's engine (:mod:`.run`); and
``service install`` (:mod:`.install`, with the unit and default config
shipped in ``data/``) and ``service status`` (:mod:`.health`).

May import: ``edgeclass.device.pipeline``, ``outputs``, ``bundle``, ``errors``,
``files``. Never the fleet or the CLI.
"""

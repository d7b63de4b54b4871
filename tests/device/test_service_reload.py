"""Hot reload under a stand-in systemd: all or nothing, said exactly, and never hanging the service.

Real processes, a real notify socket, real SIGHUPs; the faults are real too: a
config file that blocks every reader (a FIFO, as a stuck network share
would), an output folder that cannot be created, settings that only a
restart can apply.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from .service_process import FRENCH, french_bundle, read_state, service_factory, write_config  # noqa: F401
from .tinymodel import COLOURS


def _hup_and_wait(svc, timeout: float = 30) -> int:
    """SIGHUP; returns the index of the READY=1 that ends this reload."""
    mark = len(svc.lines())
    svc.proc.send_signal(signal.SIGHUP)
    return svc.wait_message("READY=1", after=svc.wait_message("RELOADING=1", after=mark), timeout=timeout)


def test_a_reload_that_hangs_times_out_and_the_old_model_keeps_running(
        service_factory, colour_bundle, french_bundle, colour_video, tmp_path):
    """Fault: a reload stuck in a read never finished: no READY=1 after RELOADING=1, for ever.

    Now it is given up after [service] reload_timeout, the log says where it
    was stuck and that the old bundle still runs, a second reload is refused
    while the first is stuck, and its late result is thrown away.
    """
    config = tmp_path / "device.toml"
    good_text = write_config(config, model={"bundle": str(colour_bundle)},
                             source={"source": str(colour_video), "loop": True, "realtime": True},
                             output={"emit": "all"},
                             service={"state_file": "state.json", "state_interval": 0.2,
                                      "reload_timeout": 1.5}).read_text()
    svc = service_factory(["--config", config])
    svc.wait_message("READY=1")
    os.unlink(config)
    os.mkfifo(config)  # every open() for reading now blocks until someone writes

    sent = time.monotonic()
    ready = _hup_and_wait(svc)
    assert 1.4 < time.monotonic() - sent < 10
    assert svc.lines()[ready + 1].startswith("STATUS=reload failed, still running bundle: timed out after 1.5 s (stuck in ")
    err = svc.err.read_text()
    failure = next(line for line in err.splitlines() if "reload failed" in line)
    assert failure.startswith("ERROR ") and str(colour_bundle.resolve()) in failure and "timed out after 1.5 s" in failure
    seen = len(svc.results())
    svc.wait_for(lambda: len(svc.results()) > seen + 10, what="results from the old model")
    assert {r["label"] for r in svc.results()} <= set(COLOURS)
    assert "timed out" in read_state(tmp_path / "state.json")["last_error"]

    # Still stuck: another reload is refused with the reason, not started beside it.
    _hup_and_wait(svc)
    assert "is still stuck" in svc.err.read_text()

    # The stuck read finally gets a (different) config: its result is discarded, nothing changes.
    stuck_text = good_text.replace(str(colour_bundle), str(french_bundle))
    writer = threading.Thread(target=lambda: config.write_text(stuck_text), daemon=True)
    writer.start()
    writer.join(10)
    svc.wait_for(lambda: "its result is discarded" in svc.err.read_text(), what="the late result thrown away")
    seen = len(svc.results())
    svc.wait_for(lambda: len(svc.results()) > seen + 10, what="more results")
    assert {r["label"] for r in svc.results()[seen:]} <= set(COLOURS)  # the French bundle was not swapped in

    # With a readable file again, a reload works as usual.
    os.unlink(config)
    config.write_text(stuck_text)
    _hup_and_wait(svc)
    svc.wait_for(lambda: any(r["label"] in FRENCH.values() for r in svc.results()), what="the new bundle")
    assert read_state(tmp_path / "state.json")["last_error"] is None
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0


def test_reload_names_the_changed_settings_and_holds_the_ones_needing_a_restart(
        service_factory, colour_bundle, colour_video, tmp_path):
    """Fault: a reload said only "reloaded: running BUNDLE", and applied [output] path (a restart-only
    setting) as soon as another [output] key changed, while claiming it waited for a restart.

    Now the log lists each changed key with old and new values, the settings
    that need a restart are named as such and are not applied: results keep
    going where they went.
    """
    base = {"model": {"bundle": str(colour_bundle)},
            "source": {"source": str(colour_video), "loop": True, "realtime": True},
            "output": {"emit": "all", "stats_interval": 0},
            "service": {"state_file": "state.json", "state_interval": 0.2}}
    config = write_config(tmp_path / "device.toml", **base)
    svc = service_factory(["--config", config])
    svc.wait_message("READY=1")
    results_file = tmp_path / "results.jsonl"
    write_config(config, **{**base, "output": {"emit": "changes", "stats_interval": 0, "path": str(results_file)},
                            "source": {**base["source"], "width": 320},
                            "decision": {"threshold": 0.6}})
    ready = _hup_and_wait(svc)
    status = svc.lines()[ready + 1]
    assert status == "STATUS=reloaded: running bundle; needs a restart for source.width, output.path"
    err = svc.err.read_text()
    done = next(line for line in err.splitlines() if "reloaded: running bundle" in line)
    assert f"({colour_bundle.resolve()}; model.tflite on the CPU (ai_edge_litert); bundle unchanged)" in done
    assert done.endswith('settings changed: decision.threshold 0.5 -> 0.6, output.emit "all" -> "changes"')
    pending = next(line for line in err.splitlines() if "need a restart" in line)
    assert pending.startswith("WARNING ")
    assert pending.endswith(f'source.width unset -> 320, output.path "-" -> "{results_file}"')
    # emit = "changes" applies (the stream is rebuilt), the path does not: still stdout, no file.
    seen = len(svc.results())
    time.sleep(2.0)
    assert not results_file.exists()
    assert len(svc.results()) - seen < 20  # changes and heartbeats only, not every frame at 30 fps

    # The pending settings stay named on every later reload until a restart.
    _hup_and_wait(svc)
    again = [line for line in svc.err.read_text().splitlines() if "need a restart" in line]
    assert len(again) == 2 and again[1].endswith(f'output.path "-" -> "{results_file}"')
    assert svc.err.read_text().splitlines().count(done) == 1
    assert "settings changed: none" in svc.err.read_text()
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0


def test_reload_applies_everything_or_nothing(service_factory, colour_bundle, french_bundle, colour_video, tmp_path):
    """A new bundle, a new threshold and an uncertain-frames folder that cannot be made: none of it is applied."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder would go")
    results = tmp_path / "results.jsonl"
    base = {"model": {"bundle": str(colour_bundle)},
            "source": {"source": str(colour_video), "loop": True, "realtime": True},
            "output": {"emit": "all", "stats_interval": 0, "path": str(results)},
            "service": {"state_file": "state.json", "state_interval": 0.2}}
    config = write_config(tmp_path / "device.toml", **base)
    svc = service_factory(["--config", config])
    svc.wait_message("READY=1")
    write_config(config, **{**base, "model": {"bundle": str(french_bundle)}, "decision": {"threshold": 0.999},
                            "output": {**base["output"], "emit": "changes"},
                            "uncertain": {"dir": str(blocker / "uncertain")}})
    ready = _hup_and_wait(svc)
    assert svc.lines()[ready + 1].startswith("STATUS=reload failed, still running bundle: ")
    assert "not-a-folder/uncertain: cannot create the uncertain-frames folder" in svc.err.read_text()
    size = results.stat().st_size
    time.sleep(1.5)
    rows = [line for line in results.read_text()[size:].splitlines() if line]
    assert len(rows) > 20  # still every frame (emit = "all"), to the same file
    joined = "".join(rows)
    assert '"label":"red"' in joined and '"unknown"' not in joined  # the old threshold
    assert not any(f'"{french}"' in joined for french in FRENCH.values())  # the old bundle
    state = read_state(tmp_path / "state.json")
    assert state["bundle_path"] == str(colour_bundle.resolve()) and "reload failed" in state["last_error"]
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0


def test_a_reload_closes_the_outputs_it_replaces_or_turns_off(tmp_path):
    """The old results file is closed when [output] path moves, and the HTTP listener is freed when [http] goes off."""
    import dataclasses
    import socket

    from edgeclass.device.outputs.factory import build_outputs, changed_outputs, reconfigurable, replace_outputs
    from edgeclass.device.outputs.http.config import HttpConfig
    from edgeclass.device.pipeline.config import SourceConfig
    from edgeclass.device.pipeline.loop import FrameLoop
    from edgeclass.device.service.config import DeviceConfig

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = DeviceConfig()
    old = dataclasses.replace(base, output=dataclasses.replace(base.output, path=str(tmp_path / "a.jsonl")),
                              http=HttpConfig(listen=f"127.0.0.1:{port}"))
    new = dataclasses.replace(old, output=dataclasses.replace(old.output, path=str(tmp_path / "b.jsonl")),
                              http=HttpConfig())
    run = FrameLoop(SourceConfig(source=str(tmp_path / "none.avi")))
    current = build_outputs(old)
    for output in current.values():
        output.start(run)
    names = changed_outputs(old, new)
    fresh = build_outputs(new, [n for n in names if n not in reconfigurable(current, names)])
    result = replace_outputs(current, fresh, names, run, new)
    try:
        assert set(result) == {"stream"} and result["stream"] is fresh["stream"]
        assert current["stream"]._stream.closed, "the replaced results file is still open"
        with socket.socket() as again:  # the old listener's port is free again
            again.bind(("127.0.0.1", port))
    finally:
        for output in result.values():
            output.close()

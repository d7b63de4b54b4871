"""What `edgeclass run` resolves: precedence of the layers, bundle validation before a swap, the reloader."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from edgeclass.device.bundle import sha256_file
from edgeclass.device.errors import BundleError, EdgeclassError, ModelError
from edgeclass.device.pipeline.preprocess import Preprocessor
from edgeclass.device.pipeline.verify import verify_bundle
from edgeclass.device.service.hotreload import Reloader
from edgeclass.device.service.changes import changed_settings, hold_for_restart, summary
from edgeclass.device.service.runconfig import RunRequest, load_run, resolve_config


def _copy_with_defaults(src: Path, dest: Path, defaults: dict | None) -> Path:
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "bundle.json").read_text())
    if defaults is not None:
        manifest["defaults"] = defaults  # bundle.json itself is not in "files": no hash to update
    (dest / "bundle.json").write_text(json.dumps(manifest))
    return dest


def _cli(**sections) -> dict:
    return {name: dict(values) for name, values in sections.items()}


def test_interactive_defaults_are_unchanged(colour_bundle, colour_video):
    loaded = load_run(RunRequest(None, _cli(model={"bundle": str(colour_bundle)}, source={"source": str(colour_video)})))
    out, dec = loaded.config.output, loaded.config.decision
    assert (out.format, out.emit, out.stats_interval, out.path) == ("human", "all", 0.0, "-")
    assert dec.threshold == 0.5 and dec.top_k == 3
    assert loaded.state_file is None  # no state file unless asked for
    src = loaded.config.source
    assert src.give_up_after == 300.0 and not src.wait_for_source  # a missing camera fails at once interactively


def test_precedence_cli_over_file_over_bundle_over_defaults(colour_bundle, colour_video, tmp_path):
    bundle = _copy_with_defaults(colour_bundle, tmp_path / "b", {"decision": {"threshold": 0.7, "smoothing": 0.5, "top_k": 2},
                                                                  "model": {"bundle": "/elsewhere"}})
    config = tmp_path / "device.toml"
    config.write_text(f'[model]\nbundle = "b"\n[source]\nsource = "{colour_video}"\n'
                      "[decision]\nsmoothing = 0.2\ntop_k = 1\n[service]\nstate_file = \"s.json\"\n")
    loaded = load_run(RunRequest(config, _cli(decision={"top_k": 3, "threshold": None})))
    d = loaded.config.decision
    assert (d.threshold, d.smoothing, d.top_k) == (0.7, 0.2, 3)  # bundle, file, command line
    assert loaded.config.output.format == "jsonl" and loaded.config.output.emit == "changes"  # service defaults
    assert loaded.config.source.wait_for_source  # a service waits for a camera that is not there yet
    assert loaded.bundle.path == bundle.resolve() and loaded.state_file == tmp_path / "s.json"


def test_bundle_and_source_may_come_from_the_file_and_symlinks_resolve(colour_bundle, colour_video, tmp_path):
    release = shutil.copytree(colour_bundle, tmp_path / "releases" / "v1")
    (tmp_path / "current").symlink_to(release)
    config = tmp_path / "device.toml"
    config.write_text(f'[model]\nbundle = "current"\n[source]\nsource = "{colour_video}"\n')
    loaded = load_run(RunRequest(config, {}))
    assert loaded.bundle.path == release.resolve()  # the release, not the symlink: state.json names it
    assert loaded.config.source.source == str(colour_video)


def test_reload_names_each_changed_setting_and_those_needing_a_restart(colour_bundle, colour_video, tmp_path):
    base = _cli(model={"bundle": str(colour_bundle)}, source={"source": str(colour_video)})
    old = resolve_config(RunRequest(None, base))
    new = resolve_config(RunRequest(None, {**base, "source": {"source": "rtsp://admin:hunter2@cam/1", "stall_timeout": 2.0},
                                           "decision": {"threshold": 0.9}}))
    changes = changed_settings(old, new)
    assert [(c.key, c.restart) for c in changes] == [
        ("source.source", True), ("source.stall_timeout", True), ("decision.threshold", False)]
    text = summary(changes)
    assert "decision.threshold 0.5 -> 0.9" in text and "source.stall_timeout 5 -> 2" in text
    assert '"rtsp://***@cam/1"' in text and "hunter2" not in text and "admin" not in text  # credentials never shown
    # What a reload applies: the threshold; the camera settings keep running as they are until a restart.
    applied = hold_for_restart(old, new)
    assert applied.decision.threshold == 0.9
    assert applied.source == old.source
    assert [c.key for c in changed_settings(applied, new)] == ["source.source", "source.stall_timeout"]


def test_secret_settings_never_show_their_value():
    """A setting declared secret=True (a broker password, say) is named as changed, its value never printed."""
    from dataclasses import dataclass, field

    from edgeclass.device.settings import setting, text

    @dataclass(frozen=True)
    class Broker:
        host: str = setting("localhost", text, "broker host")
        password: str = setting("old-pass", text, "broker password", secret=True)

    @dataclass(frozen=True)
    class Config:
        mqtt: Broker = field(default_factory=Broker)

    changes = changed_settings(Config(), Config(Broker("broker.lan", "s3cr3t-new")))
    text = summary(changes)
    assert text == 'mqtt.host "localhost" -> "broker.lan", mqtt.password (changed; value hidden)'


def test_verify_refuses_garbage_model_by_hash_and_by_interpreter(colour_bundle, tmp_path):
    bad_hash = shutil.copytree(colour_bundle, tmp_path / "bad-hash")
    (bad_hash / "model.tflite").write_bytes(b"not a model at all" * 10)
    with pytest.raises(BundleError, match=r"model.tflite: sha256 is"):
        verify_bundle(bad_hash)
    rehashed = shutil.copytree(bad_hash, tmp_path / "rehashed")
    manifest = json.loads((rehashed / "bundle.json").read_text())
    manifest["files"]["model.tflite"] = sha256_file(rehashed / "model.tflite")
    (rehashed / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="not a usable TFLite model"):
        verify_bundle(rehashed)
    bundle, classifier, ms = verify_bundle(colour_bundle)
    assert bundle.labels == ("red", "green", "blue") and ms > 0
    # The classifier it hands back is the working one: it tells red from blue.
    from .conftest import colour_frame

    preprocess = Preprocessor(bundle.input)
    assert [int(classifier.scores(preprocess(colour_frame(c))).argmax()) for c in ("red", "green", "blue")] == [0, 1, 2]


def test_reloader_runs_in_background_coalesces_and_reports_errors():
    gate, calls = threading.Event(), []

    def prepare():
        calls.append(threading.current_thread().name)
        assert gate.wait(5)
        if len(calls) == 2:
            raise EdgeclassError("bundle.json: broken")
        return "loaded"

    reloader = Reloader(prepare)
    assert not reloader.start_if_requested()  # nothing asked
    reloader.request()
    assert reloader.start_if_requested() and reloader.busy
    reloader.request()
    reloader.request()  # two more while busy: one more reload, not two
    assert not reloader.start_if_requested() and reloader.collect() is None
    gate.set()
    outcome = _wait_outcome(reloader)
    assert outcome == ("loaded", None) and calls == ["edgeclass-reload"]
    assert reloader.start_if_requested()
    assert _wait_outcome(reloader) == (None, "bundle.json: broken")
    assert not reloader.start_if_requested() and len(calls) == 2


def test_reloader_gives_up_on_a_hung_preparation_and_discards_its_late_result():
    gate, discarded = threading.Event(), []
    clock = [100.0]

    def prepare():
        assert gate.wait(10)
        return "late value"

    reloader = Reloader(prepare, timeout=5.0, discard=discarded.append, clock=lambda: clock[0])
    reloader.request()
    assert reloader.start_if_requested()
    clock[0] = 104.9
    assert reloader.collect() is None  # still within the timeout
    clock[0] = 105.0
    outcome = reloader.collect()
    assert outcome.value is None and outcome.error.startswith("timed out after 5 s (stuck in wait (")
    reloader.request()  # the thread is still stuck: refused at once, with the reason
    assert reloader.start_if_requested()
    refused = reloader.collect()
    assert refused.error.startswith("the reload started 5 s ago is still stuck (stuck in wait (")
    gate.set()
    deadline = time.monotonic() + 10
    while not discarded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert discarded == ["late value"] and reloader.collect() is None  # thrown away, never an outcome
    reloader.request()  # free again: a new reload runs
    assert reloader.start_if_requested()
    assert _wait_outcome(reloader) == ("late value", None)


def _wait_outcome(reloader):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        outcome = reloader.collect()
        if outcome is not None:
            return outcome
        time.sleep(0.01)
    raise AssertionError("reload did not finish")

"""Bundles are data, never instructions: what a bundle directory may hold, its sizes, its modes, its defaults.

Every attack is made for real on a copy of a real bundle: real symlinks, a
real FIFO (reading one would block for ever), a real device node, sparse
files of hundreds of MB (no disk used), names that climb out of the bundle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from edgeclass.device.bundle import load_bundle, sha256_file, write_bundle
from edgeclass.device.bundle.contents import MAX_FILE_BYTES, MAX_TOTAL_BYTES
from edgeclass.device.errors import BundleError
from edgeclass.device.pipeline.classifier import open_classifier
from edgeclass.device.pipeline.wrap import create_bundle_from_model
from edgeclass.device.service.config import BUNDLE_SETTABLE, bundle_defaults
from edgeclass.device.service.runconfig import RunRequest, load_run

from .tinymodel import write_colour_classifier


@pytest.fixture
def bundle_copy(colour_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(colour_bundle, tmp_path / "b"))


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "bundle.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _list(bundle: Path, name: str, digest: str | None = None) -> None:
    _edit_manifest(bundle, lambda m: m["files"].__setitem__(name, digest or sha256_file(bundle / name)))


def _load_within(path: Path, seconds: float = 20):
    """load_bundle in a thread: a FIFO that got opened would block it for ever; the test must fail, not hang."""
    outcome: dict = {}

    def work():
        try:
            outcome["bundle"] = load_bundle(path)
        except BundleError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"load_bundle({path}) blocked (it opened something it should have refused)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["bundle"]


# ------------------------------------------------------------- what a bundle may hold


def test_symlinks_in_a_bundle_are_refused(bundle_copy, tmp_path):
    model = bundle_copy / "model.tflite"
    outside = tmp_path / "elsewhere.tflite"
    shutil.move(model, outside)
    model.symlink_to(outside)  # same bytes, same hash: only the link is wrong
    with pytest.raises(BundleError, match=r"b/model\.tflite: is a symlink; a bundle holds regular files only"):
        _load_within(bundle_copy)
    model.unlink()
    shutil.move(outside, model)
    (bundle_copy / "report").symlink_to("/etc")  # an unlisted directory link
    with pytest.raises(BundleError, match=r"b/report: is a symlink"):
        _load_within(bundle_copy)


def test_symlink_to_dev_zero_as_the_model_is_refused_without_reading_it(bundle_copy):
    (bundle_copy / "model.tflite").unlink()
    (bundle_copy / "model.tflite").symlink_to("/dev/zero")  # hashing it would never end
    with pytest.raises(BundleError, match=r"model\.tflite: is a symlink"):
        _load_within(bundle_copy)


def test_fifo_in_a_bundle_is_refused_without_blocking(bundle_copy):
    os.mkfifo(bundle_copy / "pipe")
    with pytest.raises(BundleError, match=r"b/pipe: is a FIFO \(named pipe\); a bundle holds regular files only"):
        _load_within(bundle_copy)
    (bundle_copy / "pipe").unlink()
    labels = bundle_copy / "labels.txt"
    digest = sha256_file(labels)
    labels.unlink()
    os.mkfifo(labels)  # in the place of a listed file
    _list(bundle_copy, "labels.txt", digest)
    with pytest.raises(BundleError, match=r"labels\.txt: is a FIFO"):
        _load_within(bundle_copy)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root (CAP_MKNOD)")
def test_device_file_in_a_bundle_is_refused(bundle_copy):
    os.mknod(bundle_copy / "zero", 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    with pytest.raises(BundleError, match=r"b/zero: is a character device; a bundle holds regular files only"):
        _load_within(bundle_copy)


@pytest.mark.parametrize("name, message", [
    ("../outside.txt", "points outside the bundle"),
    ("/etc/passwd", "points outside the bundle"),
    ("report/../../x", "points outside the bundle"),
    ("./labels.txt", "is not a plain relative path"),
    ("report//a.json", "is not a plain relative path"),
    ("bundle.json", "lists bundle.json itself"),
])
def test_manifest_names_outside_the_bundle_are_refused(bundle_copy, name, message):
    _edit_manifest(bundle_copy, lambda m: m["files"].__setitem__(name, "0" * 64))
    with pytest.raises(BundleError, match=rf"bundle\.json: .*{message}"):
        load_bundle(bundle_copy)


def test_files_the_manifest_does_not_list_are_refused(bundle_copy):
    (bundle_copy / "run_me.sh").write_text("#!/bin/sh\nrm -rf /\n")
    with pytest.raises(BundleError, match=r"b/run_me\.sh: is not listed in bundle\.json 'files'"):
        load_bundle(bundle_copy)
    (bundle_copy / "run_me.sh").unlink()
    (bundle_copy / "report").mkdir()
    (bundle_copy / "report" / "notes.txt").write_text("unlisted")
    with pytest.raises(BundleError, match=r"report/notes\.txt: is not listed"):
        load_bundle(bundle_copy)
    _list(bundle_copy, "report/notes.txt")
    assert "report/notes.txt" in load_bundle(bundle_copy).manifest["files"]  # listed: fine


def test_a_listed_name_that_is_a_directory_is_refused(bundle_copy):
    (bundle_copy / "extra").mkdir()
    _edit_manifest(bundle_copy, lambda m: m["files"].__setitem__("extra", "0" * 64))
    with pytest.raises(BundleError, match=r"extra: is a directory, but bundle\.json lists it as a file"):
        load_bundle(bundle_copy)


def test_converter_report_files_are_listed_and_loadable(colour_bundle, tmp_path):
    """write_bundle (the converter's writer) lists every report/ file in 'files', so a converted bundle loads."""
    source = load_bundle(colour_bundle)
    report = tmp_path / "report"
    (report / "plots").mkdir(parents=True)
    (report / "metrics.json").write_text("{}")
    (report / "plots" / "confusion.png").write_bytes(b"\x89PNG not really")
    out = write_bundle(tmp_path / "converted", model=source.model_path, labels=list(source.labels), input_spec=source.input,
                       output_spec=source.output, report_dir=report)
    files = load_bundle(out).manifest["files"]
    assert {"report/metrics.json", "report/plots/confusion.png"} <= set(files)


# ------------------------------------------------------------- sizes


def test_a_file_over_the_size_cap_is_refused_by_name(bundle_copy):
    big = bundle_copy / "model_edgetpu.tflite"
    with open(big, "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    _list(bundle_copy, "model_edgetpu.tflite", "0" * 64)
    with pytest.raises(BundleError, match=r"model_edgetpu\.tflite: 256 MB, more than the 256 MB limit for one bundle file"):
        load_bundle(bundle_copy)


def test_files_over_the_total_cap_are_refused(bundle_copy):
    for index in range(3):
        with open(bundle_copy / f"part{index}.bin", "wb") as fh:
            fh.truncate(MAX_TOTAL_BYTES // 3 + 1)
        _list(bundle_copy, f"part{index}.bin", "0" * 64)
    with pytest.raises(BundleError, match=r"b: its files add up to 512 MB, more than the 512 MB limit for a bundle"):
        load_bundle(bundle_copy)


# ------------------------------------------------------------- modes


def test_bundles_are_written_world_readable_whatever_the_umask(tmp_path):
    model, labels = write_colour_classifier(tmp_path / "m")
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text("{}")
    os.chmod(report / "metrics.json", 0o600)
    old = os.umask(0o077)
    try:
        made = create_bundle_from_model(model, labels, tmp_path / "made")
        source = load_bundle(made)
        converted = write_bundle(tmp_path / "converted", model=source.model_path, labels=list(source.labels),
                                 input_spec=source.input, output_spec=source.output, report_dir=report)
    finally:
        os.umask(old)
    for bundle in (made, converted):
        modes = {p.relative_to(bundle).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [bundle, *bundle.rglob("*")]}
        assert {name: mode for name, mode in modes.items() if mode != (0o755 if (bundle / name).is_dir() else 0o644)} == {}
    assert "report" in {p.name for p in converted.iterdir()}


# ------------------------------------------------------------- the model's tensors


def test_output_quantization_is_checked_against_the_manifest(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["output"].update(quantization={"scale": 0.5, "zero_point": 7}))
    with pytest.raises(BundleError, match=r"model\.tflite: output quantization is \(scale 0\.00390625, zero point 0\) "
                                          r"but bundle\.json says \(scale 0\.5, zero point 7\)"):
        open_classifier(load_bundle(bundle_copy))


# ------------------------------------------------------------- defaults


def test_bundle_defaults_may_set_decision_keys_only(caplog):
    manifest = {"defaults": {
        "decision": {"threshold": 0.7, "top_k": 2, "smoothing": 0.3, "heartbeat": 5.0, "future_knob": 1},
        "model": {"bundle": "/elsewhere", "edgetpu": "off"},
        "source": {"source": "rtsp://attacker.example/stream"},
        "output": {"path": "/etc/cron.d/edgeclass", "format": "human"},
        "uncertain": {"dir": "/root/.ssh"},
        "service": {"state_file": "/etc/passwd"},
        "shell": "rm -rf /",
    }}
    with caplog.at_level(logging.WARNING):
        kept = bundle_defaults(manifest)
    assert kept == {"decision": {"threshold": 0.7, "top_k": 2, "smoothing": 0.3, "heartbeat": 5.0}}
    assert BUNDLE_SETTABLE == {"decision": ("threshold", "top_k", "smoothing", "heartbeat")}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["bundle.json: defaults may set only decision.threshold, decision.top_k, decision.smoothing, "
                        "decision.heartbeat; ignored: decision.future_knob, model.bundle, model.edgetpu, source.source, "
                        "output.path, output.format, uncertain.dir, service.state_file, shell"]


def test_a_bundle_cannot_redirect_the_run(bundle_copy, colour_video, tmp_path, caplog):
    """The refused keys really do nothing: the run reads the source, outputs and state file it was given."""
    _edit_manifest(bundle_copy, lambda m: m.__setitem__("defaults", {
        "decision": {"threshold": 0.8},
        "source": {"source": str(tmp_path / "not-the-camera.avi")},
        "output": {"path": str(tmp_path / "stolen.jsonl")},
        "service": {"state_file": str(tmp_path / "hijacked.json")},
        "uncertain": {"dir": str(tmp_path / "frames")},
    }))
    with caplog.at_level(logging.WARNING):
        loaded = load_run(RunRequest(None, {"model": {"bundle": str(bundle_copy)}, "source": {"source": str(colour_video)}}))
    config = loaded.config
    assert config.decision.threshold == 0.8  # the one thing a bundle may tune
    assert config.source.source == str(colour_video) and config.output.path == "-"
    assert config.uncertain.dir is None and loaded.state_file is None
    assert any("ignored: source.source, output.path, service.state_file, uncertain.dir" in r.getMessage()
               for r in caplog.records)

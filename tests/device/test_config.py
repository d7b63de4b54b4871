"""The service config file: schema, errors by name and line, paths, precedence."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edgeclass.device.service.config import (
    ConfigError,
    DeviceConfig,
    build,
    bundle_defaults,
    check_values,
    read_config_file,
    resolve,
)
from edgeclass.device.service.runconfig import RunRequest, resolve_config

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TOML = REPO / "systemd" / "device.toml"


def load_config(path: Path) -> DeviceConfig:
    """The file's values over the built-in defaults (no service or interactive layer)."""
    return build(read_config_file(path))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_default_config_loads_and_matches_builtin_defaults():
    cfg = load_config(DEFAULT_TOML)
    assert cfg == DeviceConfig(), "systemd/device.toml should state the built-in defaults, not change them"
    assert cfg.model.bundle == Path("/var/lib/edgeclass/current")
    assert cfg.service.state_file == Path("/run/edgeclass/state.json")
    assert cfg.uncertain.dir is None


def test_config_is_frozen():
    cfg = DeviceConfig()
    with pytest.raises(Exception):
        cfg.decision.threshold = 0.9  # type: ignore[misc]


def test_values_and_relative_paths(tmp_path):
    path = _write(tmp_path, """
[model]
bundle = "bundles/current"
threads = 3
edgetpu = "off"
[source]
source = "clips/test.mp4"
fps = 15
[decision]
threshold = 0.7
smoothing = 0.8
[output]
path = "out/results.jsonl"
[uncertain]
dir = "/var/lib/edgeclass/uncertain"
""")
    cfg = load_config(path)
    assert cfg.model.bundle == tmp_path / "bundles" / "current"
    assert cfg.model.threads == 3 and cfg.model.edgetpu == "off"
    assert cfg.source.source == str(tmp_path / "clips" / "test.mp4")
    assert cfg.source.fps == 15.0 and isinstance(cfg.source.fps, float)
    assert cfg.decision.threshold == 0.7 and cfg.decision.smoothing == 0.8
    assert cfg.output.path == tmp_path / "out" / "results.jsonl"
    assert cfg.uncertain.dir == Path("/var/lib/edgeclass/uncertain")
    assert cfg.decision.top_k == 3  # not given: built-in default


@pytest.mark.parametrize("source", ["0", "2", "/dev/video0", "rtsp://cam.local/stream", "http://x/y.mjpg", "picamera2"])
def test_sources_that_are_not_relative_paths_stay_as_written(tmp_path, source):
    cfg = load_config(_write(tmp_path, f'[source]\nsource = "{source}"\n'))
    assert cfg.source.source == source


def test_integer_camera_index_accepted(tmp_path):
    assert load_config(_write(tmp_path, "[source]\nsource = 0\n")).source.source == "0"


@pytest.mark.parametrize("text, message", [
    # (file text, expected message after the path)
    ("[decision]\ntop_k = 3\n\nthreshold = 1.5\n", ":4: [decision] threshold = 1.5 must be between 0 and 1"),
    ("[decision]\nsmoothing = 1\n", ":2: [decision] smoothing = 1 must be at least 0 and less than 1"),
    ("[decision]\ntreshold = 0.5\n", ":2: [decision] unknown key 'treshold' (did you mean 'threshold'? known: top_k, threshold, smoothing, heartbeat)"),
    ("[model]\nthreads = 0\n", ":2: [model] threads = 0 must be at least 1"),
    ("[model]\nthreads = 2.5\n", ":2: [model] threads = 2.5 must be a whole number of at least 1"),
    ("[model]\nthreads = true\n", ":2: [model] threads = true must be a whole number of at least 1"),
    ('[model]\nedgetpu = "yes"\n', ':2: [model] edgetpu = "yes" must be one of "auto", "on", "off"'),
    ('[model]\nbundle = ""\n', ':2: [model] bundle = "" must be a non-empty path string'),
    ("[source]\nstall_timeout = 0\n", ":2: [source] stall_timeout = 0 must be greater than 0 seconds"),
    ("[source]\nfps = -1\n", ":2: [source] fps = -1 must be greater than 0"),
    ('[output]\nformat = "csv"\n', ':2: [output] format = "csv" must be one of "jsonl", "human"'),
    ("[ouptut]\nformat = 'jsonl'\n", ":1: unknown section [ouptut] (did you mean 'output'? sections: model, source, decision, output, service, uncertain, mqtt, http)"),
    ("threshold = 0.5\n", ":1: threshold is outside any section; put it under [decision]"),
    ("decision.threshold = 2\n", ":1: [decision] threshold = 2 must be between 0 and 1"),
    ("decision = 3\n", ":1: decision must be a [decision] table of settings, got 3"),
    ("# comment\n[uncertain]\n  max_per_minute = 0  # none\n", ":3: [uncertain] max_per_minute = 0 must be at least 1"),
])
def test_bad_values_are_refused_by_name_and_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}{message}"


def test_same_key_in_two_sections_reports_the_right_line(tmp_path):
    path = _write(tmp_path, "[decision]\nthreshold = 0.5\n\n[uncertain]\nthreshold = 7\n")
    with pytest.raises(ConfigError, match=r"device\.toml:5: \[uncertain\] threshold = 7 must be between 0 and 1"):
        load_config(path)


def test_invalid_toml_and_missing_file(tmp_path):
    path = _write(tmp_path, "[decision\nthreshold = \n")
    with pytest.raises(ConfigError, match=r"device\.toml: not valid TOML: .*line 1"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"nope\.toml: no such config file"):
        load_config(tmp_path / "nope.toml")


def test_precedence_cli_over_file_over_bundle_over_defaults(tmp_path):
    path = _write(tmp_path, "[decision]\nthreshold = 0.6\ntop_k = 2\n")
    bundle = SimpleNamespace(manifest={"defaults": {"decision": {"threshold": 0.4, "smoothing": 0.5, "future_knob": 1}}},
                             path=tmp_path)
    cfg = resolve_config(RunRequest(path, {"decision": {"top_k": 5, "threshold": None}}), bundle)
    assert cfg.decision.top_k == 5  # CLI beats the file
    assert cfg.decision.threshold == 0.6  # file beats the bundle; CLI None = not given
    assert cfg.decision.smoothing == 0.5  # bundle beats the built-in 0.0
    assert cfg.decision.heartbeat == 10.0  # built-in


def test_resolve_is_plain_layering():
    merged = resolve({"a": {"x": 1, "y": 1}}, None, {"a": {"y": 2}}, {"a": {"x": None}, "b": {"z": 3}})
    assert merged == {"a": {"x": 1, "y": 2}, "b": {"z": 3}}


def test_cli_values_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"^command line: \[decision\] threshold = 3 must be between 0 and 1$"):
        resolve_config(RunRequest(None, {"decision": {"threshold": 3}}))


def test_build_and_check_values_without_a_file(tmp_path):
    layer = check_values({"output": {"path": "r.jsonl"}}, lambda s, k: "test", tmp_path)
    assert build(layer).output.path == tmp_path / "r.jsonl"
    assert build({}).output.path == "-"
    assert read_config_file(_write(tmp_path, "")) == {}

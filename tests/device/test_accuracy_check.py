"""The accuracy check of ``deploy --verify-accuracy``, its two halves run for real on this machine.

The workstation half stages real photos and evaluates the bundle here; the
device half is the shell command deploy sends over ssh, run with bash on this
machine (the ssh transport itself is covered in test_deploy.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeclass.device.bundle import load_bundle
from edgeclass.device.errors import EdgeclassError
from edgeclass.device.fleet.accuracy import AccuracyCheck, device_command, stage_sample, verdict, verdict_lines
from edgeclass.device.fleet.deploy import DeployOptions

from .test_evaluate import FILED, colour_data  # noqa: F401  (fixture)


def _options(tmp_path: Path) -> DeployOptions:
    script = tmp_path / "bin" / "edgeclass"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!{sys.executable}\nimport sys; from edgeclass.device.cli import main; sys.argv[0] = 'edgeclass'; main()\n")
    script.chmod(0o755)
    return DeployOptions(root=str(tmp_path / "root"), remote_edgeclass=str(script), as_user="")


def _split_file(data: Path, tmp_path: Path) -> Path:
    rows = [{"path": p.relative_to(data).as_posix(), "label": p.parent.name} for p in sorted(data.rglob("*.*"))]
    split = tmp_path / "run" / "split.json"
    split.parent.mkdir()
    split.write_text(json.dumps({"data_dir": str(data), "train": [], "val": [], "test": rows}))
    return split.parent


def test_both_halves_on_one_machine_agree_and_are_recorded(colour_bundle, colour_data, tmp_path):
    bundle = load_bundle(colour_bundle)
    run = _split_file(colour_data, tmp_path)
    check = AccuracyCheck(run, max_images=9, max_drop=1.0)
    sample = stage_sample(check, bundle, tmp_path / "work")
    assert sample.images == 9 and sample.source.startswith(f"a stratified sample of 9 of the test split of {run / 'split.json'}")
    staged = json.loads((sample.folder / "split.json").read_text())["test"]
    assert {e["label"] for e in staged} == set(FILED) and all(len(e["sha256"]) == 64 for e in staged)
    assert sorted((sample.folder / "photos").rglob("*.*")) == sorted(sample.folder / "photos" / e["path"] for e in staged)
    assert (sample.folder / "workstation" / "predictions.jsonl").is_file()

    options = _options(tmp_path)
    release = tmp_path / "root" / "releases" / "colour-20250101T000000.000000Z-00000000"
    release.parent.mkdir(parents=True)
    subprocess.run(["cp", "-r", str(colour_bundle), str(release)], check=True)
    stale = tmp_path / "root" / "verification" / "gone-20240101T000000.000000Z-11111111"
    stale.mkdir(parents=True)
    result = subprocess.run(["bash", "-c", device_command(options, str(release), str(sample.folder))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    device = json.loads(result.stdout.strip().splitlines()[-1])
    record = verdict(device, check)
    assert record["passed"] and record["drop_pp"] == 0.0 and record["agreement"] == 1.0
    assert record["workstation"]["accuracy"] == record["device"]["accuracy"] == sample.workstation["accuracy"]
    # The release's record on the device holds both figures; a record of a removed release is pruned.
    kept = json.loads((tmp_path / "root" / "verification" / release.name / "metrics.json").read_text())
    assert kept["accuracy"] == record["device"]["accuracy"] and kept["compared_with"]["accuracy"] == record["workstation"]["accuracy"]
    assert not stale.exists()
    lines = verdict_lines(record)
    assert lines[1] == "accuracy  drop +0.00 points (limit 1), top-1 agreement 100.00%"

    strict = verdict(device, AccuracyCheck(run, max_drop=-0.5))
    assert strict["passed"] is False


def test_a_dataset_folder_and_refusals(colour_bundle, colour_data, tmp_path):
    bundle = load_bundle(colour_bundle)
    sample = stage_sample(AccuracyCheck(colour_data, max_images=200), bundle, tmp_path / "work")
    assert sample.images == 13 and sample.source == str(colour_data)
    with pytest.raises(EdgeclassError, match="no such dataset folder"):
        stage_sample(AccuracyCheck(tmp_path / "missing"), bundle, tmp_path / "w2")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": [{"path": "red/x.jpg", "label": "red"}]}))
    with pytest.raises(EdgeclassError, match="has no data_dir; pass the dataset folder"):
        stage_sample(AccuracyCheck(split), bundle, tmp_path / "w3")

"""The device checks of the arm64 proof, run inside an emulated arm64 root by ``benchmarks/arm64.py``.

One Python process per (suite, emulated CPU) runs every check through the
``edgeclass`` app itself (the console entry point's app, in process: the
emulated interpreter's start-up of numpy, OpenCV and LiteRT is paid once, not
six times). Prints one JSON object on its last line. Only the standard
library, edgeclass[device] and what that installs may be imported here.

    python arm64_checks.py WORK_DIR     (WORK_DIR laid out by benchmarks/arm64.py)
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import pkgutil
import platform
import sys
import time
from pathlib import Path

HEAVY = ("tensorflow", "keras", "tf_keras", "matplotlib")


def no_tensorflow() -> dict:
    """Every edgeclass.device module imports, and none of them brings TensorFlow, Keras or matplotlib."""
    import edgeclass.device as device

    names = [info.name for info in pkgutil.walk_packages(device.__path__, "edgeclass.device.")
             if not info.name.endswith(".__main__")]
    for name in names:
        importlib.import_module(name)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    installed = sorted(m for m in ("tensorflow", "keras") if importlib.util.find_spec(m) is not None)
    return {"ok": not heavy and not installed, "modules": len(names), "heavy_imported": heavy, "heavy_installed": installed}


def edgeclass(*argv: str) -> tuple[int, str, str]:
    """Run one ``edgeclass`` command in this process: (exit code, stdout, stderr)."""
    from edgeclass.device.cli import app
    from edgeclass.device.errors import EdgeclassError

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app([str(a) for a in argv], standalone_mode=False)
        except EdgeclassError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = exc.exit_code
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def timed(check, *args) -> dict:
    start = time.monotonic()
    try:
        result = check(*args)
    except Exception as exc:  # a check that crashes is a failed check, reported, not a lost run
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["emulated_seconds"] = round(time.monotonic() - start, 1)
    return result


def coral(work: Path) -> dict:
    """``bundle create`` from Coral's MobileNetV2, then ``predict`` on its reference images."""
    expected = json.loads((work / "coral" / "expected.json").read_text())
    bundle = work / "out" / "coral-bundle"
    code, out, err = edgeclass("bundle", "create", "-m", work / "coral" / "model.tflite", "-l", work / "coral" / "labels.txt",
                               "-o", bundle, "--force")
    if code:
        return {"ok": False, "error": err.strip()[-500:]}
    code, out, err = edgeclass("predict", "-b", bundle, "--json", "--threads", "1", *(work / "coral" / name for name in expected))
    if code:
        return {"ok": False, "error": err.strip()[-500:]}
    answers = {Path(line["path"]).name: (line["label"], line["score"]) for line in map(json.loads, out.splitlines())}
    images = {name: {"expected": label, "label": answers[name][0], "score": answers[name][1]} for name, label in expected.items()}
    return {"ok": all(v["label"] == v["expected"] for v in images.values()), "images": images}


def evaluate(work: Path) -> dict:
    """``bundle evaluate`` of the x86-made int8 bundle on its split file, with per-image predictions."""
    spec = json.loads((work / "evaluate.json").read_text())
    results = {}
    for name, item in spec.items():
        predictions = work / "out" / f"{name}.jsonl"
        code, out, err = edgeclass("bundle", "evaluate", work / item["bundle"], work / item["dataset"],
                                   "--split-file", work / item["split_file"], "--split", item["split"],
                                   "--json", "--predictions", predictions)
        if code:
            return {"ok": False, "error": f"{name}: {err.strip()[-500:]}"}
        data = json.loads(out.strip().splitlines()[-1])
        results[name] = {"accuracy": data["accuracy"], "images": data["images"], "backend": data["backend"],
                         "latency_ms_emulated": data["latency_ms"],
                         "predictions": [json.loads(line) for line in predictions.read_text().splitlines()]}
        machine = data["machine"]
    return {"ok": True, "bundles": results, "machine": machine}


def run_video(work: Path) -> dict:
    """``run`` on a video file with --max-frames, JSON lines out (the caller compares the labels with x86's)."""
    results = work / "out" / "run.jsonl"
    results.unlink(missing_ok=True)
    code, out, err = edgeclass("run", "-b", work / "bundles" / "generated", "-s", work / "video.avi", "--max-frames", "3",
                               "--format", "jsonl", "--output", results, "--threads", "1")
    lines = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    frames = [line for line in lines if "label" in line]
    return {"ok": code == 0 and len(frames) == 3, "frames": len(frames), "labels": sorted({f["label"] for f in frames}),
            "error": err.strip()[-300:] if code else None}


def service_dry_run(work: Path) -> dict:
    """``service install --dry-run`` prints its plan and changes nothing."""
    code, out, err = edgeclass("service", "install", "--dry-run")
    return {"ok": code == 0 and "edgeclass.service" in out and not Path("/etc/systemd/system/edgeclass.service").exists(),
            "lines": len(out.splitlines()), "error": err.strip()[-300:] if code else None}


def main() -> None:
    work = Path(sys.argv[1])
    (work / "out").mkdir(exist_ok=True)
    report = {"python": platform.python_version(), "machine": platform.machine()}
    report["no_tensorflow"] = timed(no_tensorflow)  # first, before any command could import anything
    report["coral_predict"] = timed(coral, work) if (work / "coral").is_dir() else {"ok": None}
    report["evaluate"] = timed(evaluate, work)
    report["run_video"] = timed(run_video, work)
    report["service_install_dry_run"] = timed(service_dry_run, work)
    print(json.dumps(report))


if __name__ == "__main__":
    main()

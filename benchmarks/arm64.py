"""The arm64 proof: edgeclass[device] installed and run on the Pi's architecture, under qemu emulation.

For each Debian arm64 root (bookworm = Raspberry Pi OS 12, Python 3.11;
trixie = Raspberry Pi OS 13, Python 3.13; built and cached by
``arm64_root.py``) and each emulated CPU (``cortex-a72``: a Pi 4,
``cortex-a76``: a Pi 5), this runs inside the root (``arm64_checks.py``):

- the no-TensorFlow check (every edgeclass.device module imports; neither
  TensorFlow nor Keras is installed or imported);
- ``bundle create`` of Coral's MobileNetV2 and ``predict`` on Coral's
  reference images: the expected labels (skipped where ../shared/data is absent);
- ``bundle evaluate`` of an int8 bundle made here on x86-64 by ``edgeclass
  convert`` (from a small generated training run; ``--evaluate`` adds real
  ones), compared image by image with ``bundle evaluate`` on x86-64: both
  accuracies, their top-1 agreement and every image that disagrees;
- ``run`` on a video file with ``--max-frames``, compared with x86-64's answers;
- ``service install --dry-run``.

It prints one JSON object, then PASS or FAIL (exit 0 or 1). Without root,
debootstrap, qemu-user-static or binfmt_misc it prints SKIP and the reason
(exit 0; ``--require`` makes that a failure, as ``.ci/run`` does).

Timings measured under emulation are qemu's translation speed on this
machine, not a Pi's: the JSON keeps them under ``emulated_*`` names and says
so. Run from a checkout with the workstation install (TensorFlow is needed
for the x86 conversion):

    sudo .venv/bin/python benchmarks/arm64.py
    sudo .venv/bin/python benchmarks/arm64.py --suites bookworm --cpus cortex-a72 \\
        --evaluate bundles/flowers,runs/flowers/split.json --images 100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/convert/rundir_factory.py makes the generated training run
sys.path.insert(0, str(Path(__file__).resolve().parent))

import arm64_root  # noqa: E402

SHARED = Path(os.environ.get("EDGECLASS_SHARED", REPO.parent / "shared")) / "data"
CORAL_EXPECTED = {"cat.bmp": "Egyptian cat", "bird.bmp": "chickadee", "grace_hopper.bmp": "military uniform"}
CPUS = ("cortex-a72", "cortex-a76")
INSIDE = "/tmp/edgeclass-arm64"  # the work directory, as the root sees it
EMULATION_NOTE = ("timings under emulation are qemu's translation of arm64 code on this x86-64 machine, "
                  "not a Raspberry Pi's speed; only answers and accuracy carry over")


def edgeclass(*argv, timeout: float = 1200) -> subprocess.CompletedProcess:
    """The host's (x86-64) edgeclass, in a fresh process."""
    result = subprocess.run([sys.executable, "-m", "edgeclass.device.cli", *map(str, argv)], capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"edgeclass {' '.join(map(str, argv[:3]))} failed: {result.stderr.strip()[-800:]}")
    return result


def generated_run(work: Path) -> tuple[Path, Path]:
    """A small training run on generated photos (tests/convert/rundir_factory.py), converted to int8 here."""
    from tests.convert.rundir_factory import make_training_dir, split_entries, write_dataset

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = work / "generated-data"
    split = split_entries(write_dataset(data, 38))
    run = make_training_dir(work / "generated-run", data, split)
    bundle = work / "generated-bundle"
    edgeclass("convert", run, "-o", bundle, "--calibration-size", "30", "--force")
    return bundle, run / "split.json"


def subset(name: str, bundle: Path, split_file: Path, images: int, work: Path) -> dict:
    """Copy ``images`` test photos (stratified) and a split file listing just them into ``work``."""
    from edgeclass.device.bundle import load_bundle
    from edgeclass.device.pipeline.dataset import read_split_file, split_entries, stratified_sample

    doc, _ = split_entries(split_file, "test")
    data_dir = Path(doc["data_dir"])
    items = read_split_file(split_file, "test", data_dir, load_bundle(bundle).labels)
    chosen = stratified_sample(items, images) if images else items
    rels = {item.rel for item in chosen}
    dest = work / "data" / name
    for item in chosen:
        (dest / item.rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item.path, dest / item.rel)
    reduced = {**doc, "data_dir": f"{INSIDE}/data/{name}", "test": [e for e in doc["test"] if e["path"] in rels]}
    for other in ("train", "val"):
        reduced[other] = []
    (work / "splits").mkdir(exist_ok=True)
    (work / "splits" / f"{name}.json").write_text(json.dumps(reduced, indent=1))
    shutil.copytree(bundle, work / "bundles" / name, dirs_exist_ok=True)
    return {"bundle": f"bundles/{name}", "dataset": f"data/{name}", "split_file": f"splits/{name}.json", "split": "test",
            "test_images": len(items)}


def host_evaluate(name: str, item: dict, work: Path) -> dict:
    predictions = work / "x86" / f"{name}.jsonl"
    predictions.parent.mkdir(exist_ok=True)
    result = edgeclass("bundle", "evaluate", work / item["bundle"], work / item["dataset"], "--split-file",
                       work / item["split_file"], "--json", "--predictions", predictions)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return {"accuracy": data["accuracy"], "images": data["images"], "machine": data["machine"], "backend": data["backend"],
            "predictions": [json.loads(line) for line in predictions.read_text().splitlines()]}


def write_video(work: Path, label: str) -> None:
    """Ten frames of one generated photo of ``label`` (every frame has the same answer, whichever ``run`` picks)."""
    import cv2
    import numpy as np

    from tests.convert.rundir_factory import synthetic_image

    frame = cv2.cvtColor(synthetic_image(label, np.random.default_rng(7), 72, 96), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(work / "video.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 72))
    for _ in range(10):
        writer.write(frame)
    writer.release()


def host_run_video(work: Path) -> list[str]:
    out = work / "x86" / "run.jsonl"
    edgeclass("run", "-b", work / "bundles" / "generated", "-s", work / "video.avi", "--max-frames", "3",
              "--format", "jsonl", "--output", out, "--threads", "1")
    return [line["label"] for line in map(json.loads, out.read_text().splitlines()) if "label" in line]


def lay_out_coral(work: Path) -> bool:
    coral = SHARED / "coral"
    if not (coral / "mobilenet_v2_1.0_224_quant.tflite").is_file():
        return False
    (work / "coral").mkdir()
    shutil.copy(coral / "mobilenet_v2_1.0_224_quant.tflite", work / "coral" / "model.tflite")
    shutil.copy(coral / "imagenet_labels.txt", work / "coral" / "labels.txt")
    for name in CORAL_EXPECTED:
        shutil.copy(coral / "images" / name, work / "coral" / name)
    (work / "coral" / "expected.json").write_text(json.dumps(CORAL_EXPECTED))
    return True


def compare(x86: dict, arm: dict) -> dict:
    """x86 and arm64 image by image (:func:`edgeclass.device.pipeline.evaluate.compare_predictions`)."""
    from edgeclass.device.pipeline.evaluate import compare_predictions

    c = compare_predictions(x86["predictions"], arm["predictions"])
    return {"images": c["images"], "x86_accuracy": c["reference_accuracy"], "arm64_accuracy": c["other_accuracy"],
            "agreement": c["agreement"], "max_top1_score_difference": c["max_score_difference"],
            "disagree": [{"path": d["path"], "label": d["label"], "x86": d["reference"], "arm64": d["other"]}
                         for d in c["disagree"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", default=",".join(arm64_root.SUITES), help="Debian suites (default: bookworm,trixie)")
    parser.add_argument("--cpus", default=",".join(CPUS), help="QEMU_CPU values (default: cortex-a72,cortex-a76)")
    parser.add_argument("--images", type=int, default=30, help="test photos per evaluation under emulation (0 = all)")
    parser.add_argument("--evaluate", action="append", default=[], metavar="BUNDLE,SPLIT_FILE",
                        help="also evaluate this bundle on the test split of this split.json (repeatable)")
    parser.add_argument("--min-agreement", type=float, default=0.9,
                        help="FAIL below this x86/arm64 top-1 agreement (a broken arm64 path agrees far less)")
    parser.add_argument("--work", type=Path, help="keep the work files here (default: a temporary directory)")
    parser.add_argument("--require", action="store_true", help="exit 1 instead of SKIP when emulation is unavailable")
    args = parser.parse_args(argv)
    suites, cpus = args.suites.split(","), args.cpus.split(",")
    started = time.monotonic()
    try:
        arm64_root.prepare_emulation()
    except arm64_root.Unavailable as exc:
        print(f"SKIP: arm64 emulation unavailable: {exc}")
        return 1 if args.require else 0

    from edgeclass.device.pipeline.machine import describe_machine

    work = args.work or Path(tempfile.mkdtemp(prefix="edgeclass-arm64-"))
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    report: dict = {"host": describe_machine(), "note": EMULATION_NOTE, "roots": {}, "runs": []}
    try:
        t = time.monotonic()
        bundle, split_file = generated_run(work / "host")
        seconds["x86_train_and_convert"] = time.monotonic() - t
        lay = work / "inside"
        lay.mkdir(exist_ok=True)
        evaluations = {"generated": subset("generated", bundle, split_file, args.images, lay)}
        for n, pair in enumerate(args.evaluate):
            extra_bundle, extra_split = (Path(p) for p in pair.split(","))
            evaluations[extra_bundle.name if extra_bundle.name not in evaluations else f"{extra_bundle.name}-{n}"] = \
                subset(extra_bundle.name, extra_bundle, extra_split, args.images, lay)
        (lay / "evaluate.json").write_text(json.dumps(evaluations))
        coral = lay_out_coral(lay)
        write_video(lay, "green_disc")
        shutil.copy(Path(__file__).with_name("arm64_checks.py"), lay / "arm64_checks.py")
        t = time.monotonic()
        x86 = {name: host_evaluate(name, item, lay) for name, item in evaluations.items()}
        x86_video = host_run_video(lay)
        seconds["x86_evaluate_and_run"] = time.monotonic() - t
        report["x86"] = {name: {k: v for k, v in r.items() if k != "predictions"} for name, r in x86.items()}
        report["x86"]["run_video_labels"] = x86_video

        for suite in suites:
            t = time.monotonic()
            try:
                root = arm64_root.ensure_root(suite, log=lambda m: print(m, file=sys.stderr))
                arm64_root.ensure_venv(root, REPO, log=lambda m: print(m, file=sys.stderr))
            except RuntimeError as exc:  # a root or venv that could not be made: reported, the other suites still run
                report["roots"][suite] = {"error": str(exc).strip()[-800:]}
                continue
            report["roots"][suite] = {"path": str(root.path), "python": arm64_root.SUITES[suite],
                                      "debootstrap_seconds": _round(root.built_seconds), "venv_install_seconds": _round(root.venv_seconds),
                                      "reinstall_seconds": _round(root.refresh_seconds), "cached_root": root.built_seconds is None,
                                      "cached_venv": root.venv_seconds is None}
            seconds[f"{suite}_prepare"] = time.monotonic() - t
            inside = root.host_path(INSIDE)
            shutil.rmtree(inside, ignore_errors=True)
            shutil.copytree(lay, inside)
            for cpu in cpus:
                t = time.monotonic()
                print(f"[{suite}] QEMU_CPU={cpu}: device checks", file=sys.stderr)
                result = root.run([f"{arm64_root.VENV}/bin/python", f"{INSIDE}/arm64_checks.py", INSIDE], qemu_cpu=cpu, check=False)
                seconds[f"{suite}_{cpu}"] = time.monotonic() - t
                report["runs"].append(_one_run(suite, cpu, result, x86, x86_video, coral))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = {k: round(v, 1) for k, v in seconds.items()} | {"total": round(time.monotonic() - started, 1)}
    failures = [f"{suite}: {root['error']}" for suite, root in report["roots"].items() if "error" in root]
    failures += [f"{r['suite']}/{r['qemu_cpu']}: {problem}" for r in report["runs"] for problem in r["problems"]]
    for pair in ((s, c) for s in suites for c in cpus):
        if not any((r["suite"], r["qemu_cpu"]) == pair for r in report["runs"]):
            failures.append(f"{pair[0]}/{pair[1]}: did not run")
    failures += [f"{r['suite']}/{r['qemu_cpu']} {name}: agreement {e['agreement']:.2%} below --min-agreement {args.min_agreement:.0%}"
                 for r in report["runs"] for name, e in r.get("evaluate", {}).items() if e["agreement"] < args.min_agreement]
    report["result"] = "FAIL" if failures else "PASS"
    report["failures"] = failures
    print(json.dumps(report, indent=1))
    print(report["result"] + ("" if not failures else ": " + "; ".join(failures)))
    return 1 if failures else 0


def _round(value):
    return None if value is None else round(value, 1)


def _one_run(suite: str, cpu: str, result: subprocess.CompletedProcess, x86: dict, x86_video: list[str], coral: bool) -> dict:
    run = {"suite": suite, "qemu_cpu": cpu, "problems": []}
    try:
        checks = json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        run["problems"].append(f"the checks did not finish (exit {result.returncode}): {result.stderr.strip()[-600:]}")
        return run
    run["python"] = checks["python"]
    run["machine"] = checks.get("evaluate", {}).get("machine")
    run["cpuinfo_warnings"] = [line for line in result.stderr.splitlines() if "cpuinfo" in line.lower()][:5]
    for name in ("no_tensorflow", "coral_predict", "run_video", "service_install_dry_run"):
        check = checks[name]
        if name == "coral_predict" and not coral:
            run[name] = {"ok": None, "skipped": f"{SHARED / 'coral'} not present"}
            continue
        if name == "run_video":
            check["x86_labels"] = x86_video
            check["ok"] = bool(check.get("frames") == 3 and check.get("labels") == sorted(set(x86_video)))
        run[name] = check
        if not check.get("ok"):
            run["problems"].append(f"{name} failed: {check.get('error') or check}")
    evaluation = checks["evaluate"]
    if not evaluation.get("ok"):
        run["problems"].append(f"bundle evaluate failed: {evaluation.get('error')}")
        return run
    run["evaluate"] = {name: compare(x86[name], arm) for name, arm in evaluation["bundles"].items()}
    run["evaluate_emulated_seconds"] = evaluation["emulated_seconds"]
    return run


if __name__ == "__main__":
    sys.exit(main())

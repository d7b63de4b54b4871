"""``edgeclass train --search``: real tiny searches through the CLI, selected on validation loss only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeclass.train import rundir

from ..conftest import run_edgeclass
from .conftest import CLASSES, make_tree, probe, tiny_train_args

pytest.importorskip("tensorflow")
pytest.importorskip("optuna")

pytestmark = pytest.mark.slow


def _trials(out: Path) -> list[dict]:
    return json.loads((out / "search" / "trials.json").read_text())


def _config(out: Path) -> dict:
    return json.loads((out / rundir.CONFIG).read_text())


def _keys(value) -> set[str]:
    """Every key in a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A three-trial search (both budgets given; the trial count ends it)."""
    root = tmp_path_factory.mktemp("search")
    data = make_tree(root / "data", {c: 16 for c in CLASSES})
    out = root / "run"
    result = run_edgeclass("train", data, "-o", out, *tiny_train_args(epochs=2, head_epochs=5),
                           "--search", "3", "--search-minutes", "60", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_every_trial_is_recorded_with_validation_figures_only(searched):
    out, _ = searched
    trials = _trials(out)
    assert [t["trial"] for t in trials] == [0, 1, 2]
    # Five random trials before the pruner compares: none of three is pruned.
    assert {t["state"] for t in trials} == {"COMPLETE"}
    params = [t["params"] for t in trials]
    assert set(params[0]) == {"lr", "fine_tune_layers", "dropout", "crop", "jitter"}
    assert len({json.dumps(p, sort_keys=True) for p in params}) == 3
    for t in trials:
        assert t["best_val_loss"] == pytest.approx(min(t["val_losses"]), abs=1e-6)
        assert t["finetune_epochs"] >= 1 and t["head_epochs"] >= 1 and t["seconds"] > 0
        assert 0 <= t["val_accuracy"] <= 1
    # Nothing measured on the test split: no key names it, and no figure is an accuracy but validation's.
    keys = _keys(trials)
    assert not [k for k in keys if "test" in k.lower()]
    assert {k for k in keys if "acc" in k} == {"val_accuracy"}


def test_config_records_the_best_trial_as_the_runs_settings(searched):
    out, _ = searched
    trials, config = _trials(out), _config(out)
    search = config["search"]
    best = min((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["best_val_loss"])
    assert search["best_trial"] == best["trial"] and search["best_params"] == best["params"]
    assert search["best_val_loss"] == best["best_val_loss"]
    assert (search["objective"], search["trials"]) == ("val_loss", 3)
    assert search["budget"] == {"trials": 3, "minutes": 60}
    p = best["params"]
    for name in ("lr", "fine_tune_layers", "dropout"):
        assert config[name] == p[name], name
    assert config["augment"]["crop"] == p["crop"]
    assert config["augment"]["brightness"] == config["augment"]["contrast"] == p["jitter"]
    # Only the best trial keeps weights; every trial keeps its log.
    kept = sorted(str(p.relative_to(out / "search")) for p in (out / "search").glob("trial-*/*.weights.h5"))
    assert kept == [best["weights"]] and best["weights"].startswith(f"trial-{best['trial']}/")
    assert all((out / "search" / f"trial-{t['trial']}" / "history.csv").is_file() for t in trials)
    assert "weights" not in [t for t in trials if t is not best][0]


def test_final_model_is_the_best_trials_checkpoint_and_test_is_scored_once(searched):
    import keras

    from edgeclass.device.bundle import ResizePolicy
    from edgeclass.device.pipeline.images import load_image
    from edgeclass.device.pipeline.preprocess import resize_image

    out, result = searched
    config, run = _config(out), rundir.load_training_dir(out)
    items = run.split_items("val")
    x = np.stack([resize_image(load_image(p), 64, 64, ResizePolicy.CENTER_CROP) for p, _ in items]).astype(np.float32)
    y = keras.utils.to_categorical([label for _, label in items], len(CLASSES))
    model = keras.models.load_model(out / rundir.MODEL)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config["label_smoothing"])
    val_loss = float(loss(y, model.predict(x, verbose=0)))
    # No retraining: the model is the checkpoint whose validation loss chose it.
    assert val_loss == pytest.approx(config["search"]["best_val_loss"], abs=2e-4)

    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["num_images"] == len(run.split["test"]) and metrics["split"] == "test"
    assert metrics["training"]["best_val_loss"] == pytest.approx(config["search"]["best_val_loss"], abs=1e-5)
    page = (out / "report" / "index.html").read_text()
    assert '<section id="search">' in page and page.count('class="best"') == 1
    assert "search: best of 3 trials is trial" in result.stderr


def test_a_time_budget_alone_stops_starting_trials(tmp_path):
    data = make_tree(tmp_path / "data", {c: 10 for c in CLASSES})
    out = tmp_path / "run"
    # 0.6 s: the first trial always starts, and by its end the budget is spent.
    result = run_edgeclass("train", data, "-o", out, *tiny_train_args(epochs=1, head_epochs=2),
                           "--search-minutes", "0.01", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t["state"] for t in _trials(out)] == ["COMPLETE"]
    assert _config(out)["search"]["budget"] == {"trials": None, "minutes": 0.01}
    assert (out / rundir.MODEL).is_file()


def _wait_for_trial(out: Path, proc: subprocess.Popen, number: int, timeout: float = 300) -> None:
    """Until trial ``number`` has trained its head (its log exists): well inside the trial.

    Not the moment trials.json first shows it: the trial then clears Keras' session, and a Ctrl-C that
    lands in a garbage collector's weakref callback there is swallowed by Python ("Exception ignored").
    """
    path = out / "search" / "trials.json"
    log = out / "search" / f"trial-{number}" / "history.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the search ended before trial {number}: {proc.communicate()}"
        if log.exists() and path.exists() and any(t["trial"] == number for t in json.loads(path.read_text())):
            return
        time.sleep(0.05)
    raise AssertionError(f"no trial {number} within {timeout} s")


def test_resume_continues_an_interrupted_search(tmp_path):
    data = make_tree(tmp_path / "data", {c: 10 for c in CLASSES})
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "edgeclass.device.cli", "train", data, "-o", out,
                             *tiny_train_args(epochs=1, head_epochs=2), "--search", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    _wait_for_trial(out, proc, 1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C during the second trial
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    before = _trials(out)
    assert [(t["trial"], t["state"]) for t in before] == [(0, "COMPLETE"), (1, "FAIL")]
    assert before[1]["error"] == "interrupted"

    result = run_edgeclass("train", data, "-o", out, "--resume", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "search: continuing after 1 finished trial(s)" in result.stderr
    after = _trials(out)
    # The finished trial is kept as it was (less its weights if trial 2 beat it); the interrupted one
    # stays recorded and does not count.
    unweighted = lambda records: [{k: v for k, v in r.items() if k != "weights"} for r in records]  # noqa: E731
    assert unweighted(after[:2]) == unweighted(before)
    assert [(t["trial"], t["state"]) for t in after[2:]] == [(2, "COMPLETE")]
    assert after[2]["params"] != after[0]["params"]
    search = _config(out)["search"]
    assert search["trials"] == 2
    assert search["best_trial"] == min((0, 2), key=lambda n: after[n]["best_val_loss"])
    assert (out / rundir.MODEL).is_file() and (out / "report" / "metrics.json").is_file()


def test_a_trial_behind_the_median_is_stopped_after_its_first_fine_tuning_epoch():
    """The pruner on a real (tiny) Keras fit: five earlier trials reached val loss 0.1 at every epoch;
    one whose val loss stays far above that stops after the first epoch the pruner may judge."""
    import keras

    from edgeclass.train.config import TrainConfig
    from edgeclass.train.search import STARTUP_TRIALS, _frozen, create_study, pruning_callback, search_space

    space = search_space(TrainConfig("x"))
    study = create_study(0)
    for n in range(STARTUP_TRIALS):
        study.add_trial(_frozen({"trial": n, "state": "COMPLETE", "params": {"dropout": 0.05 * n},
                                 "best_val_loss": 0.1, "val_losses": [0.5, 0.1, 0.1, 0.1]}, space))
    trial = study.ask()
    trial.report(0.5, 0)  # the head: step 0 is never judged
    assert not trial.should_prune()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)), keras.utils.to_categorical(rng.integers(0, 3, 64), 3)  # nothing to learn
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    pruning = pruning_callback(trial)
    fitted = model.fit(x, y, validation_data=(x[:16], y[:16]), epochs=4, verbose=0, callbacks=[pruning])
    assert pruning.pruned and len(fitted.history["val_loss"]) == 1
    assert study.trials[-1].intermediate_values == {0: 0.5, 1: pytest.approx(fitted.history["val_loss"][0])}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--search", "0"], "--search 0: expected a number of trials >= 1"),
        (["--search-minutes", "-1"], "--search-minutes -1: expected a time budget > 0 minutes"),
        (["--search", "2", "--epochs", "0"], "--search tunes fine-tuning (learning rate, depth, augmentation), "
                                             "which --epochs 0 turns off"),
        (["--search", "2", "--fine-tune-layers", "0"], "which --fine-tune-layers 0 turns off"),
        (["--search", "2", "--resume"], "--resume continues a search with the budget it started with"),
    ],
    ids=["zero-trials", "negative-minutes", "no-epochs", "no-depth", "resume"],
)
def test_search_option_refusals_are_one_line_before_tensorflow(tree, tmp_path, args, message):
    report, stderr = probe("train", tree, "-o", tmp_path / "run", *args, timeout=120)
    assert report["code"] == 2, stderr
    line = stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and message in line
    assert not report["tensorflow"]
    assert not (tmp_path / "run").exists()

"""``edgeclass train --search``: a hyperparameter search with Optuna, selected on validation loss only.

Every trial is a whole training (head phase, then fine-tuning) on the training
split with its own settings, scored by the validation loss of its best epoch:
the same checkpoint a plain run keeps. The test split is never looked at here;
the final model is the best trial's best checkpoint (no retraining), and the
normal report scores it on test once.

Computed once and shared by every trial: the scan and image caches, the
split, and the frozen backbone's features of the train and val centre crops
(they depend only on the backbone's ImageNet weights and the images, not on
anything searched; the head's own training does depend on the dropout, so
each trial trains its own head on them).

What is searched (:func:`search_space`): the fine-tuning learning rate (log
scale), the fine-tuned depth, the dropout, the random crop's smallest area and
the colour jitter (``jitter`` sets brightness and contrast alike). A setting
the command line switched off or fixed stays as given: ``--augment crop=0``
keeps the centre crop, no brightness/contrast keeps no jitter, and an explicit
``--fine-tune-layers`` keeps that depth.

Files (``RUN/search/``)::

    trials.json     one record per trial (page_sources.TRIALS), rewritten atomically when a trial starts and ends
    trial-N/        that trial's state.json and history.csv; the best finished trial also keeps its best
                    weights (the others' weights are deleted once they are not the best)

``--resume`` continues the study: finished trials are kept (fed back to the
sampler and the pruner), an interrupted one is recorded as FAIL, and the
budget counts the trials and minutes already spent.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from edgeclass.device.errors import EdgeclassError
from edgeclass.device.files import atomic_write

from .config import TrainConfig
from .rundir import HISTORY_CSV

log = logging.getLogger(__name__)

SEARCH_DIR = "search"
TRIALS = "trials.json"  # page_sources.TRIALS is SEARCH_DIR/TRIALS
OBJECTIVE = "val_loss"
# Candidate depths for --fine-tune-layers (-1 = all). MobileNetV2 has 154 backbone layers,
# V3 small 103, V3 large 139; 56 is the default (config.PRETRAINED_FINE_TUNE_LAYERS).
DEPTHS = (14, 28, 56, 84, -1)
# Random trials before TPE models the results, and trials before the pruner compares
# against a median: few, because each trial is a whole training run.
STARTUP_TRIALS = 5
FINISHED = ("COMPLETE", "PRUNED")


class SearchError(EdgeclassError):
    """A search option cannot work, or the search has nothing to choose from."""


@dataclass(frozen=True)
class Budget:
    """When to stop starting trials: after ``trials`` finished ones or ``minutes`` of trials, whichever is first."""

    trials: int | None = None
    minutes: float | None = None

    def to_json(self) -> dict:
        return {"trials": self.trials, "minutes": self.minutes}

    @classmethod
    def from_json(cls, data: dict) -> "Budget":
        return cls(data.get("trials"), data.get("minutes"))

    def describe(self) -> str:
        parts = [f"{self.trials} trials"] if self.trials else []
        return " or ".join(parts + ([f"{self.minutes:g} minutes"] if self.minutes else []))


def check_options(trials: int | None, minutes: float | None, config: TrainConfig, resume: bool) -> Budget | None:
    """The search budget from ``--search``/``--search-minutes``, or ``None`` without them; one-line refusals
    (no TensorFlow or Optuna import: a typo fails at once)."""
    if trials is None and minutes is None:
        return None
    if resume:
        raise SearchError("--resume continues a search with the budget it started with (config.json); "
                          "drop --search/--search-minutes")
    if trials is not None and trials < 1:
        raise SearchError(f"--search {trials}: expected a number of trials >= 1")
    if minutes is not None and not minutes > 0:
        raise SearchError(f"--search-minutes {minutes:g}: expected a time budget > 0 minutes")
    if config.epochs < 1:
        raise SearchError(f"--search tunes fine-tuning (learning rate, depth, augmentation), which --epochs "
                          f"{config.epochs} turns off: use --epochs 1 or more")
    if config.fine_tune_layers == 0:
        raise SearchError("--search tunes fine-tuning, which --fine-tune-layers 0 turns off: "
                          "drop --fine-tune-layers to search the depth too")
    _check_optuna_installed()
    return Budget(trials, minutes)


def _check_optuna_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise SearchError("--search needs Optuna, which is not installed: pip install 'edgeclass[train]'")


def search_space(config: TrainConfig) -> dict:
    """What each trial draws, as JSON (``config.json["search"]["space"]``): ``{low, high[, log|step]}`` or
    ``{choices}``. The ranges bracket the defaults in config.py."""
    space: dict = {"lr": {"low": 1e-5, "high": 1e-3, "log": True}}
    # From random weights every layer must train; an explicit depth is the user's choice.
    if config.fine_tune_layers is None and config.weights != "none":
        space["fine_tune_layers"] = {"choices": list(DEPTHS)}
    space["dropout"] = {"low": 0.0, "high": 0.5, "step": 0.05}
    if config.augment.crop > 0:
        space["crop"] = {"low": 0.08, "high": 0.8, "step": 0.01}
    if config.augment.brightness > 0 or config.augment.contrast > 0:
        space["jitter"] = {"low": 0.0, "high": 0.4, "step": 0.01}
    return space


def apply_params(config: TrainConfig, params: dict) -> TrainConfig:
    """``config`` with a trial's parameters in place (``jitter`` is brightness and contrast alike)."""
    changes = {name: params[name] for name in ("lr", "fine_tune_layers", "dropout") if name in params}
    augment = {}
    if "crop" in params:
        augment["crop"] = params["crop"]
    if "jitter" in params:
        augment["brightness"] = augment["contrast"] = params["jitter"]
    return config.with_(augment=replace(config.augment, **augment), **changes)


def _clean(params: dict) -> dict:
    # Six significant digits: a stepped value reads 0.15, not 0.15000000000000002, in trials.json
    # and config.json alike, and the model is trained with exactly the value recorded.
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in params.items()}


def _distribution(spec: dict):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if "choices" in spec:
        return CategoricalDistribution(spec["choices"])
    return FloatDistribution(spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step"))


def _suggest(trial, name: str, spec: dict):
    if "choices" in spec:
        return trial.suggest_categorical(name, spec["choices"])
    return trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step"))


def read_trials(search_dir: Path) -> list[dict]:
    path = search_dir / TRIALS
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))


def _records(study, search_dir: Path) -> list[dict]:
    # The record's own fields are the trial's user attributes (set by the objective), so a resumed
    # study rewrites the earlier records unchanged; "weights" only while that file is kept.
    records = []
    for t in sorted(study.trials, key=lambda t: t.number):
        record = {"trial": t.number, "state": t.state.name, "params": _clean(t.params), **t.user_attrs}
        if "weights" in record and not (search_dir / record["weights"]).is_file():
            del record["weights"]
        records.append(record)
    return records


def _write_trials(study, search_dir: Path) -> None:
    atomic_write(search_dir / TRIALS, json.dumps(_records(study, search_dir), indent=2) + "\n")


def _frozen(record: dict, space: dict):
    """An earlier process's trial, for ``study.add_trial`` (the sampler and pruner learn from it)."""
    from optuna.trial import TrialState, create_trial

    state = record["state"] if record["state"] in FINISHED else "FAIL"
    attrs = {k: v for k, v in record.items() if k not in ("trial", "state", "params")}
    if record["state"] not in (*FINISHED, "FAIL"):
        attrs["error"] = "interrupted"  # the process ended while it ran (killed)
    params = {k: v for k, v in record.get("params", {}).items() if k in space}
    steps = {step: loss for step, loss in enumerate(attrs.get("val_losses") or [])}
    return create_trial(state=TrialState[state], value=record.get("best_val_loss") if state == "COMPLETE" else None,
                        params=params, distributions={k: _distribution(space[k]) for k in params},
                        user_attrs=attrs, intermediate_values=steps if state != "FAIL" else None)


def _best(study):
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def _keep_best_weights(study, search_dir: Path) -> None:
    """Delete every trial's weights and optimizer slots except the best finished trial's best weights."""
    best = _best(study)
    keep = search_dir / best.user_attrs["weights"] if best is not None else None
    for path in [*search_dir.glob("trial-*/*.weights.h5"), *search_dir.glob("trial-*/*.optimizer.npz")]:
        if path != keep:
            path.unlink()


def _summary(state: dict, seconds: float, trial_dir: Path, search_dir: Path) -> dict:
    """The record of one trained trial: validation figures only."""
    history = state.get("history", [])
    phase, epoch = state["best_epoch"].split()
    best_row = next((h for h in history if h["phase"] == phase and h["epoch"] == int(epoch)), {})
    head = [h["val_loss"] for h in history if h["phase"] == "head"]
    finetune = [h["val_loss"] for h in history if h["phase"] == "finetune"]
    return {
        "best_val_loss": round(float(state["best_val_loss"]), 6),
        "best_epoch": state["best_epoch"],
        "val_accuracy": round(float(best_row["val_accuracy"]), 4) if "val_accuracy" in best_row else None,
        "head_epochs": state.get("head_epochs_run"),
        "finetune_epochs": len(finetune),
        # Step 0 is the head's best (what fine-tuning starts from), then one value per fine-tuning epoch:
        # what the pruner compared.
        "val_losses": [round(float(v), 6) for v in [min(head), *finetune]] if head else [],
        "seconds": round(seconds, 1),
        "weights": str((trial_dir / state["best_weights"]).relative_to(search_dir)),
    }


def create_study(seed: int):
    """A study minimising validation loss: TPE seeded by ``seed``; the median pruner, from the step after the
    head (step 0) on, once :data:`STARTUP_TRIALS` trials have finished."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead
    return optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=1),
    )


def pruning_callback(trial):
    from .callbacks import _callback_base

    class Pruning(_callback_base()):
        """Reports each fine-tuning epoch's val loss to the study; stops the trial when the pruner says so."""

        pruned = False

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("val_loss")
            if loss is None:
                return
            trial.report(float(loss), epoch + 1)
            if trial.should_prune():
                self.pruned = True
                self.model.stop_training = True

    return Pruning()


@dataclass
class SearchResult:
    config: TrainConfig  # the best trial's settings: the run's settings
    state: dict  # the best trial's training state (history, best epoch) for the report
    weights: Path  # the best trial's best weights: the final model
    history_csv: Path  # its per-epoch log
    summary: dict  # config.json["search"]
    dtypes: dict | None = None  # the training model's precision (model.dtype_summary), None if no trial ran here


def run_search(config: TrainConfig, budget: Budget, space: dict, data, out: Path, placement, *,
               resume: bool, tensorboard_dir: Path | None = None) -> SearchResult:
    """Run (or, with ``resume``, continue) the study in ``out/search`` and return its best trial.

    ``placement`` (:func:`~edgeclass.train.fit.device_setup`) builds every trial's model on its replicas;
    the trials' loops see the global batch and scaled learning rates, as a single run's do.
    """
    import keras
    import optuna

    from .callbacks import read_state
    from .fit import build_training_model, fine_tune, head_features, train_head
    from .model import dtype_summary

    search_dir = out / SEARCH_DIR
    search_dir.mkdir(exist_ok=True)
    earlier = read_trials(search_dir) if resume else []
    # A resumed study must not draw its first trials' parameters again: the seed moves on.
    study = create_study(config.seed + len(earlier))
    for record in earlier:
        study.add_trial(_frozen(record, space))
    _keep_best_weights(study, search_dir)  # an interrupted trial's checkpoints
    finished = sum(r["state"] in FINISHED for r in earlier)
    spent = sum(r.get("seconds") or 0 for r in earlier)
    if earlier:
        log.info("search: continuing after %d finished trial(s) (%.0f s)", finished, spent)
    n_trials = None if budget.trials is None else max(0, budget.trials - finished)
    timeout = None if budget.minutes is None else budget.minutes * 60 - spent
    num_classes = data.num_classes
    to_run = n_trials != 0 and (timeout is None or timeout > 0)

    initial = features = dtypes = None
    if to_run:
        keras.utils.set_random_seed(config.seed)
        with placement.strategy.scope():
            start = build_training_model(config, num_classes, placement, pretrained=True)
            # Every trial starts from the same weights (ImageNet backbone, one seeded head) and trains its
            # head on the same frozen features: the trials differ by their parameters only.
            initial = start.get_weights()
            dtypes = dtype_summary(start)
            features = head_features(start, data, placement.scaled(config))
        del start

    def objective(trial) -> float:
        try:
            return train_trial(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted")
            raise
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise

    def train_trial(trial) -> float:
        params = _clean({name: _suggest(trial, name, spec) for name, spec in space.items()})
        settings = apply_params(config, params)
        trial_dir = search_dir / f"trial-{trial.number}"
        shutil.rmtree(trial_dir, ignore_errors=True)
        trial_dir.mkdir()
        _write_trials(study, search_dir)  # shows the trial as RUNNING
        log.info("search: trial %d (%s)", trial.number, ", ".join(f"{k} {v:g}" for k, v in params.items()))
        started = time.perf_counter()
        keras.backend.clear_session()  # one model per trial: do not let the graphs pile up
        keras.utils.set_random_seed(config.seed)
        state: dict = {"phase": "head"}
        pruning = pruning_callback(trial)
        loops = placement.scaled(settings)
        with placement.strategy.scope():
            model = build_training_model(settings, num_classes, placement, pretrained=False)
            model.set_weights(initial)
            train_head(model, data, loops, state, trial_dir, trial_dir / HISTORY_CSV, features)
            trial.report(float(state["best_val_loss"]), 0)
            if settings.fine_tune_top != 0:
                fine_tune(model, data, loops, state, trial_dir, trial_dir / HISTORY_CSV,
                          tensorboard_dir / f"trial-{trial.number}" if tensorboard_dir else None,
                          extra_callbacks=(pruning,))
        for key, value in _summary(state, time.perf_counter() - started, trial_dir, search_dir).items():
            trial.set_user_attr(key, value)
        log.info("search: trial %d %s: val loss %.4f (%s)", trial.number, "pruned" if pruning.pruned else "done",
                 state["best_val_loss"], state["best_epoch"])
        if pruning.pruned:
            raise optuna.TrialPruned()
        return float(state["best_val_loss"])

    def after_trial(study, _trial) -> None:
        _keep_best_weights(study, search_dir)
        _write_trials(study, search_dir)

    if to_run:
        left = Budget(n_trials, timeout / 60 if timeout is not None else None)
        log.info("search: up to %s more, selected on validation loss", left.describe())
        try:
            study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=[after_trial])
        finally:
            _write_trials(study, search_dir)  # an interrupted or failed trial is recorded too
    best = _best(study)
    if best is None:
        raise SearchError(f"{search_dir}: no trial finished training (see {TRIALS}); nothing to choose from")
    best_dir = search_dir / f"trial-{best.number}"
    records = _records(study, search_dir)
    summary = {
        "objective": OBJECTIVE,
        "trials": sum(r["state"] in FINISHED for r in records),
        "best_trial": best.number,
        "best_params": _clean(best.params),
        "best_val_loss": best.user_attrs["best_val_loss"],
        "budget": budget.to_json(),
        "space": space,
        "seconds": round(sum(r.get("seconds") or 0 for r in records), 1),
    }
    log.info("search: best of %d trials is trial %d (val loss %.4f): %s", summary["trials"], best.number,
             best.value, ", ".join(f"{k} {v:g}" for k, v in summary["best_params"].items()))
    return SearchResult(apply_params(config, summary["best_params"]), read_state(best_dir),
                        search_dir / best.user_attrs["weights"], best_dir / HISTORY_CSV, summary, dtypes)

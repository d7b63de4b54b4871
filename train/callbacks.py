"""Keras callbacks: rich progress bars, and per-epoch checkpoints that make ``--resume`` exact.

Checkpoint files are named by epoch and ``state.json`` (written atomically,
last) says which ones are current, so a process killed at any instant leaves a
consistent state: the last completed epoch's weights, optimizer slots and
early-stopping counters.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from edgeclass.device.files import atomic_write

log = logging.getLogger(__name__)

STATE = "state.json"


def read_state(ckpt_dir: Path) -> dict | None:
    """The saved training state, or ``None`` when there is none."""
    path = ckpt_dir / STATE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_state(ckpt_dir: Path, state: dict) -> None:
    """Replace ``state.json`` atomically (a reader sees the old or the new file, never half)."""
    atomic_write(ckpt_dir / STATE, json.dumps(state, indent=2) + "\n")


def save_optimizer(optimizer, path: Path) -> None:
    np.savez(path, *[np.asarray(v) for v in optimizer.variables])


def load_optimizer(optimizer, path: Path) -> None:
    """Restore optimizer slots saved by :func:`save_optimizer` (the optimizer must be built)."""
    with np.load(path) as data:
        values = [data[f"arr_{i}"] for i in range(len(data.files))]
    if len(values) != len(optimizer.variables):
        log.warning("optimizer state in %s does not match the model (%d vs %d variables): starting it fresh",
                    path, len(values), len(optimizer.variables))
        return
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)


def cosine_lr(base: float, position: float, epochs: int, warmup: int = 0) -> float:
    """The learning rate at ``position`` (in epochs, fractional: one value per step).

    A linear warm-up over the first ``warmup`` epochs, then cosine decay from
    ``base`` towards 0 at ``epochs``. A function of the position only, so
    ``--resume`` (which restarts at an epoch boundary) continues the same schedule.
    """
    warmup = min(warmup, max(0, epochs - 1))  # a run of one epoch still reaches base
    if position < warmup:
        return base * position / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (position - warmup) / max(1, epochs - warmup))))


def _callback_base():
    # Imported on use so this module (and the CLI) loads without Keras.
    import keras

    return keras.callbacks.Callback


def make_progress_callback(description: str, total_epochs: int, initial_epoch: int = 0, steps: int | None = None):
    """A callback drawing an epochs bar and a batches bar with running loss/accuracy."""
    from rich.progress import TextColumn

    from .progress import make_progress

    class RichProgress(_callback_base()):
        def on_train_begin(self, logs=None):
            self.progress = make_progress(TextColumn("{task.fields[stats]}"))
            self.progress.start()
            self.epochs = self.progress.add_task(description, total=total_epochs, completed=initial_epoch, stats="")
            self.batches = None

        def on_epoch_begin(self, epoch, logs=None):
            if self.batches is not None:
                self.progress.remove_task(self.batches)
            self.batches = self.progress.add_task(f"  epoch {epoch + 1}", total=steps or self.params.get("steps"), stats="")

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            self.progress.update(self.batches, advance=1, stats=_fmt(logs))

        def on_epoch_end(self, epoch, logs=None):
            self.progress.update(self.epochs, advance=1, stats=_fmt(logs or {}))

        def on_train_end(self, logs=None):
            if self.batches is not None:
                self.progress.remove_task(self.batches)
            self.progress.stop()

    return RichProgress()


def _fmt(logs: dict) -> str:
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    return " ".join(f"{k} {float(logs[k]):.3f}" for k in keys if k in logs)


def make_checkpoint_callback(ckpt_dir: Path, state: dict, *, base_lr: float, epochs: int, patience: int,
                             images_per_epoch: int, history_csv: Path, steps_per_epoch: int, warmup_epochs: int = 0):
    """Per step: set the learning rate (warm-up, then cosine); per epoch: save weights/optimizer/state, stop early."""

    class Checkpoint(_schedule_class(base_lr, epochs, steps_per_epoch, warmup_epochs)):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            seconds = time.perf_counter() - self.started
            row = {"phase": "finetune", "epoch": epoch + 1, "step": state["head_epochs_run"] + epoch + 1,
                   "lr": self.lr, "seconds": round(seconds, 2),
                   "images_per_s": round(images_per_epoch / seconds, 1), **logs}
            state["history"].append(row)
            append_csv(history_csv, row)
            weights = ckpt_dir / f"epoch-{epoch + 1}.weights.h5"
            self.model.save_weights(weights)
            save_optimizer(self.model.optimizer, ckpt_dir / f"epoch-{epoch + 1}.optimizer.npz")
            old = [state.get("last_weights"), state.get("last_optimizer")]
            state.update(epoch=epoch + 1, last_weights=weights.name, last_optimizer=f"epoch-{epoch + 1}.optimizer.npz")
            # Counted by the optimizer itself (and restored with it on --resume): with N replicas each
            # step takes the global batch, so an epoch is ceil(images / global batch) steps.
            state["optimizer_steps"] = int(np.asarray(self.model.optimizer.iterations))
            val_loss = logs.get("val_loss", logs.get("loss"))
            if state.get("best_val_loss") is None or val_loss < state["best_val_loss"] - 1e-4:
                best = ckpt_dir / f"best-{epoch + 1}.weights.h5"
                self.model.save_weights(best)
                old.append(state.get("best_weights"))
                state.update(best_val_loss=val_loss, best_weights=best.name, best_epoch=f"finetune {epoch + 1}")
            # Patience counts against fine-tuning's own best, not the head's: the first
            # augmented epochs sit above the head's val loss and then come down (seed 7 on
            # flowers: 0.693, 0.683, 0.660, 0.660 vs the head's 0.653 would stop there, at the
            # head model). The best checkpoint above still competes with the head.
            if state.get("finetune_best_val_loss") is None or val_loss < state["finetune_best_val_loss"] - 1e-4:
                state.update(finetune_best_val_loss=val_loss, wait=0)
            else:
                state["wait"] = state.get("wait", 0) + 1
            write_state(ckpt_dir, state)
            for name in old:
                # The head checkpoint stays: it is the best model if fine-tuning never beats it.
                if name and name not in (state["last_weights"], state["last_optimizer"], state["best_weights"], state.get("head_weights")):
                    (ckpt_dir / name).unlink(missing_ok=True)
            if patience and state["wait"] >= patience:
                log.info("early stop: fine-tuning val_loss has not improved for %d epochs (best: %s)", patience, state["best_epoch"])
                self.model.stop_training = True

    return Checkpoint()


def make_schedule_callback(base_lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: int = 0):
    """Sets the learning rate before every step: :func:`cosine_lr` at that step (``.lr`` is the last one set)."""
    return _schedule_class(base_lr, epochs, steps_per_epoch, warmup_epochs)()


def _schedule_class(base_lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: int):
    """The callback class behind :func:`make_schedule_callback` (the checkpoint callback extends it)."""

    class Schedule(_callback_base()):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            # Per step, so the warm-up ramps within the first epoch instead of starting
            # at the full rate. (On flowers it did not remove the dip in val accuracy
            # after the first fine-tuning epoch, so that dip is not the size of the first
            # steps; more likely the head meeting augmented images for the first time.)
            self.lr = cosine_lr(base_lr, self.epoch + (batch + 0.5) / steps_per_epoch, epochs, warmup_epochs)
            self.model.optimizer.learning_rate = self.lr

    return Schedule


def append_csv(path: Path, row: dict) -> None:
    """Append one epoch row to the CSV training log (header on first write)."""
    columns = ["phase", "epoch", "step", "lr", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_s"]
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as fh:
        if new:
            fh.write(",".join(columns) + "\n")
        fh.write(",".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + "\n")


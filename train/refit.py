"""``--refit``: once validation has chosen how long to train, train again on train+val for that long.

The first run (head, then fine-tuning with early stopping) is unchanged and
picks its best epoch on the validation split. The refit then starts again
from the same initial weights and trains on train and validation photos
together: the head for as many epochs as the first run's best head epoch,
then fine-tuning for as many epochs as its best fine-tuning epoch, on the
same learning-rate schedule (the same rate at every step of those epochs).
Nothing is held out while it trains, so nothing can be early-stopped: the
epoch counts are the ones validation chose, on 10 % fewer photos.

The validation split has then been trained on: the report's validation
figures describe training data, no temperature can be fitted on it, and the
test split stays the one honest figure.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .callbacks import make_progress_callback, make_schedule_callback, write_state
from .config import TrainConfig
from .evaluate import predict
from .fit import (build_training_model, fine_tune_optimizer, fit_steps, head_targets, loss_and_metrics,
                  training_batches)
from .model import feature_extractor, from_scratch, set_fine_tuning
from .pipeline import steps_per_epoch

log = logging.getLogger(__name__)

WEIGHTS = "refit.weights.h5"


def chosen_epochs(state: dict) -> tuple[int, int]:
    """(head epochs, fine-tuning epochs) of the first run's best model, as validation chose them."""
    best = str(state.get("best_epoch", ""))
    phase, _, number = best.partition(" ")
    head = int(state.get("head_best_epoch") or state.get("head_epochs_run") or 1)
    if phase == "head":
        return int(number or head), 0
    return head, int(number or 0)


def refit(config: TrainConfig, data, state: dict, ckpt_dir: Path, placement) -> Path:
    """Train a fresh model on train+val for the chosen epochs; its weights file (also recorded in ``state``).

    ``config`` is as the first run's loops had it (:meth:`~.fit.Placement.scaled`: the global batch and
    scaled learning rates); ``placement`` builds the fresh model on the same replicas.
    """
    import keras

    head_epochs, finetune_epochs = chosen_epochs(state)
    loss, metrics = loss_and_metrics(config, data)
    rows = np.concatenate([np.asarray(data.split["train"], np.int64), np.asarray(data.split["val"], np.int64)])
    log.info("refit on train+val (%d photos): %d head epochs and %d fine-tuning epochs, as validation chose",
             len(rows), head_epochs, finetune_epochs)
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed + 1)  # not the first run's dropout masks again
    model = build_training_model(config, data.num_classes, placement)
    set_fine_tuning(model, 0)
    features = predict(feature_extractor(model), data.images, rows, config.batch_size, "features (train+val)")
    targets = head_targets(data, rows, config.batch_size)
    weights = data.sample_weights[rows] if data.sample_weights is not None else None
    head = model.get_layer("head")
    head.compile(optimizer=keras.optimizers.Adam(config.head_lr), loss=loss, metrics=metrics)
    steps = steps_per_epoch(len(rows), config.batch_size)
    head.fit(features, targets, sample_weight=weights, epochs=head_epochs, batch_size=config.batch_size,
             shuffle=True, verbose=0, callbacks=[make_progress_callback("refit: head", head_epochs, steps=steps)])
    if finetune_epochs:
        trainable = set_fine_tuning(model, config.fine_tune_top, train_batchnorm=from_scratch(config))
        model.compile(optimizer=fine_tune_optimizer(config), loss=loss, metrics=metrics)
        batches = training_batches(data, rows, config, seed=config.seed + 1, epochs=finetune_epochs)
        # The first run's schedule (cosine over --epochs), stopped where validation stopped it.
        schedule = make_schedule_callback(config.lr, config.epochs, steps, config.warmup_epochs)
        progress = make_progress_callback(f"refit: fine-tune ({trainable} backbone layers)", finetune_epochs,
                                          steps=steps)
        model.fit(batches, epochs=finetune_epochs, steps_per_epoch=fit_steps(data, steps),
                  shuffle=False, verbose=0, callbacks=[schedule, progress])
    path = ckpt_dir / WEIGHTS
    model.save_weights(path)
    state.update(refit={"head_epochs": head_epochs, "finetune_epochs": finetune_epochs, "images": int(len(rows)),
                        "seconds": round(time.perf_counter() - started, 1)}, refit_weights=path.name)
    write_state(ckpt_dir, state)
    return path


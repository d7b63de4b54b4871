"""Two-phase fine-tuning with resumable state.

Phase 1 (head): the backbone is frozen and BatchNorm runs in inference mode,
so the backbone is a fixed function of the image. Its pooled features are
computed once for the train and val images and the head is trained on them:
one forward pass instead of one per epoch, which is what makes many head
epochs affordable on a CPU. (Augmentation is left to phase 2; the head only
needs a good starting point.)

Phase 2 (fine-tune): the top of the backbone is unfrozen (BatchNorm stays
frozen) and it trains with the head on augmented batches at a lower learning
rate (a linear per-step warm-up over the first epoch, then cosine decay), with
early stopping on val loss and the best epoch kept.

With a teacher (``--teacher``, see :mod:`.distill`) both phases train on the
distillation loss; validation loss stays the plain cross-entropy.

Devices (``--devices``, :func:`device_setup`): on several GPUs, or on the CPU
split into logical devices, both phases run under
``tf.distribute.MirroredStrategy``. The configured batch is per replica: the
loops get the global batch and learning rates scaled linearly with it
(:meth:`Placement.scaled`), and BatchNorm trained from scratch computes its
statistics over the global batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclass.device.errors import EdgeclassError

from .callbacks import (
    append_csv,
    load_optimizer,
    make_checkpoint_callback,
    make_progress_callback,
    write_state,
)
from .config import TrainConfig, parse_devices
from .evaluate import predict
from .model import build_backbone, build_model, feature_extractor, from_scratch, set_fine_tuning
from .pipeline import make_crop_dataset, make_dataset, steps_per_epoch

log = logging.getLogger(__name__)


@dataclass
class Data:
    """The decoded-image cache and what the trainer needs to know per row."""

    images: np.ndarray  # (N, H, W, 3) uint8, device-preprocessed
    labels: np.ndarray  # (N,) label index per row
    sample_weights: np.ndarray | None  # (N,) class weight per row, or None
    split: dict[str, list[int]]  # split name -> rows
    num_classes: int
    photos: object = None  # crops.WholePhotos: the uncropped photos fine-tuning crops from (None: centre crops)
    teacher: object = None  # the teacher's Keras model on this run's input size (distill.py), or None


class DevicesError(EdgeclassError):
    """The devices ``--devices`` asks for are not there, or can no longer be set up in this process."""


@dataclass
class Placement:
    """Where training runs: the distribution strategy, its devices (one replica each) and the precision."""

    strategy: object  # tf.distribute.Strategy
    devices: list[str]  # logical device names, one per replica
    mixed: bool  # mixed_float16: float16 compute, float32 variables

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def policy(self) -> str:
        return "mixed_float16" if self.mixed else "float32"

    def scaled(self, config: TrainConfig) -> TrainConfig:
        """``config`` as the training loops use it: ``batch_size`` is the global batch (replicas x the
        configured per-replica batch) and both learning rates scale linearly with it."""
        n = self.replicas
        return config.with_(batch_size=config.batch_size * n, lr=config.lr * n, head_lr=config.head_lr * n)

    def record(self, config: TrainConfig) -> dict:
        """What ``config.json`` and ``metrics.json`` say about where and how the run trained."""
        scaled = self.scaled(config)
        return {
            "devices_option": config.devices,
            "replicas": self.replicas,
            "devices": list(self.devices),
            "strategy": "MirroredStrategy" if self.replicas > 1 else "default",
            "batch_per_replica": config.batch_size,
            "global_batch": scaled.batch_size,
            "lr_scale": self.replicas,
            "head_lr": scaled.head_lr,
            "lr": scaled.lr,
            "precision_policy": self.policy,
            "synchronized_batchnorm": self.sync_batchnorm(config),
        }

    def sync_batchnorm(self, config: TrainConfig) -> bool:
        """BatchNorm trains only from scratch; with several replicas its statistics must span them all."""
        return from_scratch(config) and self.replicas > 1


def device_setup(config: TrainConfig) -> Placement:
    """Pick the devices (``config.devices``), the distribution strategy and the precision.

    Call before anything else touches TensorFlow: ``cpu:N`` splits the CPU
    into N logical devices, which TensorFlow allows only until it has
    initialised its devices. The precision policy is not set here (see
    :attr:`Placement.policy`): the caller sets it around training only.
    """
    import tensorflow as tf

    kind, count = parse_devices(config.devices)
    if kind == "cpu":
        _hide_gpus(tf, config.devices)
        if count and count > 1:
            _split_cpu(tf, count, config.devices)
        devices = _logical(tf, "CPU", count or 1, config.devices)
    else:
        gpus = tf.config.list_physical_devices("GPU")
        if kind == "gpu" and not gpus:
            raise DevicesError(f"--devices {config.devices}: TensorFlow sees no GPU here; use --devices auto or cpu")
        if count and count > len(gpus):
            raise DevicesError(f"--devices {config.devices}: only {len(gpus)} GPU(s) found; "
                               f"use gpu:{len(gpus)} or auto")
        if gpus:
            devices = _logical(tf, "GPU", count or len(gpus), config.devices)
        else:
            devices = _logical(tf, "CPU", 1, config.devices)
    on_gpu = "GPU" in devices[0].upper()
    # float16 compute with float32 variables: about 2x on tensor-core GPUs; the
    # softmax layer is pinned to float32 (model.build_head) for a stable loss.
    mixed = config.mixed_precision == "on" or (config.mixed_precision == "auto" and on_gpu)
    # One device: TensorFlow's default placement already uses it (the first GPU, or the CPU).
    strategy = tf.distribute.MirroredStrategy(devices=devices) if len(devices) > 1 else tf.distribute.get_strategy()
    placement = Placement(strategy, devices, mixed)
    _log_placement(placement, config)
    return placement


def _hide_gpus(tf, option: str) -> None:
    """``--devices cpu[:N]`` on a machine with GPUs: keep every op off them."""
    if not tf.config.list_physical_devices("GPU"):
        return
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        if tf.config.list_logical_devices("GPU"):
            raise DevicesError(f"--devices {option}: TensorFlow already set up the GPUs in this process; "
                               "run edgeclass train in a new process") from None


def _split_cpu(tf, count: int, option: str) -> None:
    """Split the CPU into ``count`` logical devices: N replicas, sharing the same cores, without a GPU."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        # TensorFlow fixes its devices when it first uses them; an earlier split into as many is as good.
        if len(tf.config.list_logical_devices("CPU")) < count:
            raise DevicesError(f"--devices {option}: TensorFlow already set up its devices in this process "
                               "(as one CPU); run edgeclass train in a new process") from None


def _logical(tf, kind: str, count: int, option: str) -> list[str]:
    """The names of the first ``count`` logical devices of ``kind``."""
    names = [d.name for d in tf.config.list_logical_devices(kind)]
    if len(names) < count:
        raise DevicesError(f"--devices {option}: TensorFlow has {len(names)} {kind} device(s), {count} asked for")
    return names[:count]


def _log_placement(placement: Placement, config: TrainConfig) -> None:
    """One line: where training runs, the batch, the learning rates and the precision."""
    precision = "mixed precision (mixed_float16)" if placement.mixed else "float32"
    short = ", ".join(d.replace("/device:", "") for d in placement.devices)
    if placement.replicas == 1:
        log.info("training on %s: batch %d, %s", short, config.batch_size, precision)
        return
    scaled = placement.scaled(config)
    log.info("training on %d replicas with MirroredStrategy (%s): batch %d per replica = %d global; learning rates "
             "x%d (head %g, fine-tune %g); %s%s", placement.replicas, short, config.batch_size, scaled.batch_size,
             placement.replicas, scaled.head_lr, scaled.lr, precision,
             "; BatchNorm synchronised across replicas" if placement.sync_batchnorm(config) else "")


def build_training_model(config: TrainConfig, num_classes: int, placement: Placement, pretrained: bool = True):
    """The model to train: its variables created in the strategy's scope (mirrored on every replica), in
    the current precision policy, with BatchNorm synchronised when it trains on several replicas."""
    with placement.strategy.scope():
        return build_model(config, num_classes, pretrained=pretrained, sync_batchnorm=placement.sync_batchnorm(config))


def loss_and_metrics(config: TrainConfig, data: Data):
    """Cross-entropy and accuracy; with a teacher, the distillation loss and accuracy on the true labels."""
    import keras

    if data.teacher is None:
        return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing), ["accuracy"]
    from .distill import distillation_loss, label_accuracy

    loss = distillation_loss(data.num_classes, config.distill_weight, config.distill_temperature,
                             config.label_smoothing)
    return loss, [label_accuracy(data.num_classes)]


def head_targets(data: Data, rows, batch_size: int) -> np.ndarray:
    """The head phase's targets for ``rows``: one-hot labels, and with a teacher its scores beside them."""
    import keras

    y = keras.utils.to_categorical(data.labels[rows], data.num_classes)
    if data.teacher is None:
        return y
    from .distill import soft_targets

    # The head trains on features of the centre crops, so its soft targets are the teacher's on those crops.
    return np.concatenate([y, soft_targets(data.teacher, data.images, rows, batch_size)], axis=1)


def training_batches(data: Data, rows, config: TrainConfig, *, seed: int, epochs: int, initial_epoch: int = 0):
    """Augmented training batches over ``rows`` for epochs ``initial_epoch..epochs``, with the teacher's scores
    beside the labels when there is a teacher.

    Random crops of the whole photos when they are cached (the dataset then spans every remaining epoch:
    give ``model.fit`` :func:`fit_steps`), else the centre crops through Keras' random layers.
    """
    if data.photos is not None:
        batches = make_crop_dataset(data.photos, rows, data.labels, data.num_classes, config.batch_size,
                                    config.input_size, config.augment, seed=seed, epochs=epochs,
                                    initial_epoch=initial_epoch, sample_weights=data.sample_weights)
    else:
        batches = make_dataset(data.images, rows, data.labels, data.num_classes, config.batch_size, shuffle=True,
                               augment=config.augment, sample_weights=data.sample_weights, seed=seed + initial_epoch)
    if data.teacher is None:
        return batches
    from .distill import with_teacher

    # Soft targets on the very crops trained on.
    return with_teacher(batches, data.teacher, data.num_classes)


def fit_steps(data: Data, steps: int) -> int | None:
    """``steps_per_epoch`` for ``model.fit`` on :func:`training_batches`: the random-crop dataset runs through
    every epoch in one go, the centre-crop one ends each epoch itself."""
    return steps if data.photos is not None else None


def fine_tune_optimizer(config: TrainConfig):
    """Adam, or AdamW when ``--weight-decay`` is set (decoupled decay); the schedule sets its rate per step."""
    import keras

    if config.weight_decay:
        return keras.optimizers.AdamW(config.lr, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(config.lr)


@dataclass
class HeadFeatures:
    """The frozen backbone's pooled features of the train and val centre crops (the head's inputs)."""

    train: np.ndarray
    val: np.ndarray
    images_per_s: float  # the frozen backbone's forward speed, for the report


def head_features(model, data: Data, config: TrainConfig) -> HeadFeatures:
    """One forward pass of the frozen backbone over the train and val rows.

    The result depends only on the backbone's weights and the centre-crop
    images (BatchNorm in inference mode, no augmentation), so a search computes
    it once and every trial's head trains on the same arrays.
    """
    set_fine_tuning(model, 0)
    extractor = feature_extractor(model)
    started = time.perf_counter()
    train_rows = data.split["train"]
    feats = predict(extractor, data.images, train_rows, config.batch_size, "features (frozen backbone)")
    speed = len(train_rows) / (time.perf_counter() - started)
    val_feats = predict(extractor, data.images, data.split["val"], config.batch_size, "features (val)")
    return HeadFeatures(feats, val_feats, speed)


def train_head(model, data: Data, config: TrainConfig, state: dict, ckpt_dir: Path, history_csv: Path,
               features: HeadFeatures | None = None) -> None:
    """Phase 1: fit the head on cached features of the frozen backbone; checkpoint the result.

    ``features`` (from :func:`head_features` on the same backbone weights) skips the forward pass.
    """
    import keras

    set_fine_tuning(model, 0)
    history_csv.unlink(missing_ok=True)  # a head phase restarted by --resume starts the log afresh
    features = features if features is not None else head_features(model, data, config)
    feats, val_feats, forward_speed = features.train, features.val, features.images_per_s
    train_rows, val_rows = data.split["train"], data.split["val"]
    y = head_targets(data, train_rows, config.batch_size)
    y_val = keras.utils.to_categorical(data.labels[val_rows], data.num_classes)
    weights = data.sample_weights[train_rows] if data.sample_weights is not None else None
    head = model.get_layer("head")
    loss, metrics = loss_and_metrics(config, data)
    head.compile(optimizer=keras.optimizers.Adam(config.head_lr), loss=loss, metrics=metrics)
    stop = keras.callbacks.EarlyStopping("val_loss", patience=max(5, config.patience), restore_best_weights=True)
    steps = -(-len(train_rows) // config.batch_size)
    fitted = head.fit(
        feats, y, sample_weight=weights, validation_data=(val_feats, y_val), epochs=config.head_epochs,
        batch_size=config.batch_size, shuffle=True, verbose=0,
        callbacks=[stop, make_progress_callback("head (frozen backbone)", config.head_epochs, steps=steps)],
    )
    rows = []
    for epoch in range(len(fitted.history["loss"])):
        row = {"phase": "head", "epoch": epoch + 1, "step": epoch + 1, "lr": config.head_lr,
               **{k: float(v[epoch]) for k, v in fitted.history.items()}}
        rows.append(row)
        append_csv(history_csv, row)
    best = int(np.argmin(fitted.history["val_loss"]))
    weights_file = ckpt_dir / "head.weights.h5"
    model.save_weights(weights_file)
    state.update(
        phase="finetune", epoch=0, history=rows, head_epochs_run=len(rows), head_weights=weights_file.name,
        last_weights=weights_file.name, last_optimizer=None, best_weights=weights_file.name,
        best_val_loss=float(fitted.history["val_loss"][best]), best_epoch=f"head {best + 1}", head_best_epoch=best + 1,
        wait=0,
        frozen_images_per_s=round(forward_speed, 1),
    )
    write_state(ckpt_dir, state)
    log.info("head: %d epochs, best val accuracy %.3f (epoch %d); frozen backbone forward %.0f images/s",
             len(rows), fitted.history["val_accuracy"][best], best + 1, forward_speed)


def fine_tune(model, data: Data, config: TrainConfig, state: dict, ckpt_dir: Path, history_csv: Path,
              tensorboard_dir: Path | None = None, extra_callbacks: tuple = ()) -> None:
    """Phase 2: unfreeze the top of the backbone and train on augmented batches, from ``state['epoch']``.

    ``extra_callbacks`` run after the checkpoint callback in each epoch (so they see that epoch's state saved).
    """
    import keras

    trainable = set_fine_tuning(model, config.fine_tune_top, train_batchnorm=from_scratch(config))
    loss, metrics = loss_and_metrics(config, data)
    model.compile(optimizer=fine_tune_optimizer(config), loss=loss, metrics=metrics)
    initial = int(state.get("epoch", 0))
    if initial:
        model.optimizer.build(model.trainable_variables)
        load_optimizer(model.optimizer, ckpt_dir / state["last_optimizer"])
        log.info("resuming fine-tuning after epoch %d of %d", initial, config.epochs)
    if initial >= config.epochs or (config.patience and state.get("wait", 0) >= config.patience):
        return
    train_rows = data.split["train"]
    steps = steps_per_epoch(len(train_rows), config.batch_size)
    train_ds = training_batches(data, train_rows, config, seed=config.seed, epochs=config.epochs, initial_epoch=initial)
    val_ds = make_dataset(data.images, data.split["val"], data.labels, data.num_classes, config.batch_size)
    callbacks = [
        make_checkpoint_callback(ckpt_dir, state, base_lr=config.lr, epochs=config.epochs, patience=config.patience,
                                 images_per_epoch=len(train_rows), history_csv=history_csv, steps_per_epoch=steps,
                                 warmup_epochs=config.warmup_epochs),
        make_progress_callback(f"fine-tune ({trainable} backbone layers)", config.epochs, initial, steps=steps),
    ]
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
    callbacks += extra_callbacks
    # shuffle=False: the dataset shuffles itself (Keras would only warn that it ignores the flag).
    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, initial_epoch=initial, shuffle=False,
              steps_per_epoch=fit_steps(data, steps), verbose=0, callbacks=callbacks)


def export_model(config: TrainConfig, num_classes: int, weights_file: Path):
    """A clean float32, uncompiled copy of the model holding the weights in ``weights_file``.

    Rebuilding (rather than saving the training model) drops the optimizer
    slots, any mixed-precision policy and the BatchNorm synchronisation
    across replicas: the converter gets plain float32 layers, float32 in,
    float32 softmax out.
    """
    import keras

    keras.mixed_precision.set_global_policy("float32")
    clean = build_model(config, num_classes, backbone=build_backbone(config, pretrained=False))
    clean.load_weights(weights_file)
    return clean

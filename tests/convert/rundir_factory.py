"""Building real, tiny training directories in the format of ``edgeclass.train.rundir``.

The converter's tests must not depend on the trainer's code (written in
parallel), so this writes the directory itself: generated photos saved as
JPEG files of assorted sizes, a split.json pointing at them, and a Keras
model really trained on them (resized through the device's resize_image,
exactly as the contract says).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeclass.device.pipeline.images import load_image
from edgeclass.device.bundle import ResizePolicy
from edgeclass.device.pipeline.preprocess import resize_image

LABELS = ("blue_bars", "green_disc", "red_checks")
SIZES = ((72, 96), (96, 72), (80, 80), (64, 120))


def synthetic_image(label: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB photo-like image: a class-specific colour and pattern, random shift and noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(60, 120, 3)
    img = np.empty((height, width, 3), np.float32)
    img[:] = base
    phase = rng.uniform(0, 8)
    if label == "blue_bars":
        mask = ((xx + phase) // 6) % 2 == 0
        img[mask] = [40, 60, 200 + rng.uniform(-30, 30)]
    elif label == "green_disc":
        cy, cx = height / 2 + rng.uniform(-8, 8), width / 2 + rng.uniform(-8, 8)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(height, width) / 3) ** 2
        img[mask] = [50, 200 + rng.uniform(-30, 30), 60]
    else:
        mask = (((xx + phase) // 8) + ((yy + phase) // 8)) % 2 == 0
        img[mask] = [210 + rng.uniform(-30, 30), 50, 40]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(data_dir: Path, per_class: int, seed: int = 0) -> list[dict]:
    """Write ``per_class`` JPEGs per label under ``data_dir/<label>/``; return their entries."""
    import cv2

    rng = np.random.default_rng(seed)
    entries = []
    for label in LABELS:
        (data_dir / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = SIZES[i % len(SIZES)]
            path = data_dir / label / f"{label}_{i:03d}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(synthetic_image(label, rng, h, w), cv2.COLOR_RGB2BGR))
            entries.append({"path": f"{label}/{path.name}", "label": label})
    return entries


def split_entries(entries: list[dict], counts=(24, 4, 10)) -> dict:
    """Per class: the first counts[0] to train, the next counts[1] to val, the next counts[2] to test."""
    split = {"train": [], "val": [], "test": []}
    by_label: dict[str, list[dict]] = {}
    for entry in entries:
        by_label.setdefault(entry["label"], []).append(entry)
    for items in by_label.values():
        a, b, c = counts
        split["train"] += items[:a]
        split["val"] += items[a : a + b]
        split["test"] += items[a + b : a + b + c]
    return split


def load_split(data_dir: Path, items: list[dict], size: int, policy=ResizePolicy.CENTER_CROP):
    x = np.stack([resize_image(load_image(data_dir / e["path"]), size, size, policy) for e in items]).astype(np.float32)
    y = np.array([LABELS.index(e["label"]) for e in items])
    return x, y


def tiny_cnn(size: int, classes: int):
    """A plain CNN (no BatchNorm, so a short training run predicts sensibly) with normalisation inside."""
    import keras

    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out)


def mobilenet_v2(size: int, classes: int):
    """The default backbone's graph (alpha 0.35, random weights) with the trainer's head shape."""
    import keras

    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35, include_top=False,
                                              weights=None, pooling="avg")
    x = backbone(x)
    out = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out)


def make_training_dir(root: Path, data_dir: Path, split: dict, *, kind: str = "tiny_cnn", size: int = 32,
                      epochs: int = 40, seed: int = 0) -> Path:
    """Train a model on the split's train images and write the training directory at ``root``."""
    import keras

    keras.utils.set_random_seed(seed)
    model = tiny_cnn(size, len(LABELS)) if kind == "tiny_cnn" else mobilenet_v2(size, len(LABELS))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = load_split(data_dir, split["train"], size)
    if epochs:
        model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=True)
    root.mkdir(parents=True, exist_ok=True)
    model.save(root / "model.keras")
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    config = {"backbone": kind, "alpha": 0.35 if kind != "tiny_cnn" else None, "input_size": size,
              "resize": "center_crop", "weights": None, "epochs": epochs, "seed": seed,
              "edgeclass_version": "test", "normalization": "model"}
    (root / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (root / "split.json").write_text(json.dumps({"data_dir": str(data_dir), "seed": seed, "ratios": None, **split}, indent=2),
                                     encoding="utf-8")
    (root / "dataset.json").write_text(json.dumps({"fingerprint": "test-fingerprint"}), encoding="utf-8")
    return root

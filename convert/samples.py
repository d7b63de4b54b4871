"""Choosing and loading the images conversion needs: calibration and evaluation sets.

Images are decoded with :func:`edgeclass.device.images.load_image` and resized
with :func:`edgeclass.device.preprocess.resize_image` under the training
directory's resize policy, so calibration and evaluation see exactly the pixels
the Pi will feed the model.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeclass.device.errors import EdgeclassError, ImageError
from edgeclass.device.pipeline.images import load_image
from edgeclass.device.bundle import ResizePolicy
from edgeclass.device.pipeline.preprocess import resize_image

from .progress import Progress, no_progress

log = logging.getLogger(__name__)


class SampleError(EdgeclassError):
    """The training directory's splits cannot provide the images conversion needs."""


def stratified_sample(items: Sequence[tuple[Path, int]], size: int, labels: Sequence[str], seed: int = 0,
                      where: str = "split.json") -> list[tuple[Path, int]]:
    """Pick ``size`` items with every class present and classes as even as the data allow.

    Classes are visited round-robin (each shuffled with ``seed``), so a small
    sample still covers every class and a rare class is not drowned out; once a
    class runs out the others fill the remaining places. Refuses a split with a
    class that has no images, and a size smaller than the number of classes:
    calibrating without a class's images leaves that class's activation ranges
    unmeasured, which is how int8 accuracy silently collapses on one class.
    """
    by_class: dict[int, list[tuple[Path, int]]] = defaultdict(list)
    for path, label in items:
        by_class[label].append((Path(path), label))
    missing = [labels[i] for i in range(len(labels)) if not by_class.get(i)]
    if missing:
        raise SampleError(
            f"{where}: the train split has no images of {', '.join(missing)}; the representative (calibration) "
            "set needs every class (re-split the dataset or retrain)"
        )
    if size < len(labels):
        raise SampleError(f"--calibration-size {size} is smaller than the {len(labels)} classes; every class needs at least one image")
    rng = random.Random(seed)
    queues = []
    for i in range(len(labels)):
        group = list(by_class[i])
        rng.shuffle(group)
        queues.append(group)
    chosen: list[tuple[Path, int]] = []
    while len(chosen) < size and any(queues):
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop())
    if len(chosen) < size:
        log.info("calibration: the train split has only %d images; using all of them", len(chosen))
    return chosen


def load_resized(paths: Sequence[Path], height: int, width: int, policy: ResizePolicy,
                 progress: Progress = no_progress, description: str = "loading images") -> np.ndarray:
    """Decode and resize images into one (N, height, width, 3) uint8 array.

    A missing or unreadable file is an error naming it: the split lists it, so
    the data directory has moved or changed since training.
    """
    out = np.empty((len(paths), height, width, 3), np.uint8)
    with progress(description, len(paths)) as advance:
        for i, path in enumerate(paths):
            try:
                rgb = load_image(path)
            except ImageError as exc:
                raise SampleError(f"{exc} (listed in split.json; has the dataset moved since training?)") from None
            out[i] = resize_image(rgb, height, width, policy)
            advance()
    return out

"""A procedurally drawn image dataset, for the demo and for tests: no downloads.

Five classes of shapes (circle, triangle, square, star, cross), each drawn with
real variation: position, scale, rotation, colour (never a clue to the class),
textured backgrounds, uneven lighting, blur and sensor noise. A network has to
learn shape, so a broken pipeline (wrong preprocessing, scrambled labels,
collapsed BatchNorm) scores near chance, while a working one scores well.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

CLASSES = ("circle", "cross", "square", "star", "triangle")


def _polygon(cx: float, cy: float, radius: float, angle: float, points: list[tuple[float, float]]) -> np.ndarray:
    """Unit-circle ``points`` (r, theta) scaled, rotated and moved into pixels."""
    out = [(cx + radius * r * math.cos(t + angle), cy + radius * r * math.sin(t + angle)) for r, t in points]
    return np.round(np.array(out)).astype(np.int32)


def _shape_points(name: str) -> list[tuple[float, float]]:
    if name == "triangle":
        return [(1.0, k * 2 * math.pi / 3) for k in range(3)]
    if name == "square":
        return [(1.0, math.pi / 4 + k * math.pi / 2) for k in range(4)]
    if name == "star":
        return [((1.0 if k % 2 == 0 else 0.42), k * math.pi / 5) for k in range(10)]
    if name == "cross":
        w = 0.3  # arm half-width relative to the radius
        pts = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        return [(math.hypot(x, y), math.atan2(y, x)) for x, y in pts]
    raise ValueError(name)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    import cv2

    kind = rng.integers(4)
    base = rng.integers(0, 256, 3).astype(np.float32)
    if kind == 0:  # smooth gradient
        other = rng.integers(0, 256, 3).astype(np.float32)
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        img = base * (1 - t) + other * t + np.zeros((h, 1, 1), np.float32)
    elif kind == 1:  # stripes
        period = rng.uniform(6, 24)
        angle = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wave = (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0)[..., None]
        img = np.where(wave, base, base * rng.uniform(0.4, 0.8)).astype(np.float32)
    elif kind == 2:  # blotchy texture
        small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * 0.6 + base * 0.4
    else:  # flat with fine grain
        img = base + rng.normal(0, 12, (h, w, 3)).astype(np.float32)
    return img


def draw_sample(name: str, rng: np.random.Generator, size: tuple[int, int] = (160, 128)) -> np.ndarray:
    """One RGB uint8 image of class ``name`` with random nuisance factors."""
    import cv2

    w, h = size
    img = _background(rng, h, w)
    # Distractor: a thin random line or dot cluster that is not a class cue.
    for _ in range(rng.integers(0, 3)):
        p1 = tuple(int(v) for v in (rng.integers(0, w), rng.integers(0, h)))
        p2 = tuple(int(v) for v in (rng.integers(0, w), rng.integers(0, h)))
        cv2.line(img, p1, p2, tuple(float(c) for c in rng.integers(0, 256, 3)), int(rng.integers(1, 3)))
    radius = rng.uniform(0.18, 0.36) * min(w, h)
    cx = rng.uniform(radius, w - radius)
    cy = rng.uniform(radius, h - radius)
    colour = rng.integers(0, 256, 3).astype(np.float32)
    # Keep the shape visible against the background around it.
    around = img[int(cy), int(cx)]
    if np.abs(colour - around).sum() < 150:
        colour = 255 - around
    colour_t = tuple(float(c) for c in colour)
    if name == "circle":
        axes = (int(radius), int(radius * rng.uniform(0.85, 1.0)))
        cv2.ellipse(img, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, colour_t, -1, cv2.LINE_AA)
    else:
        pts = _polygon(cx, cy, radius, rng.uniform(0, 2 * math.pi), _shape_points(name))
        cv2.fillPoly(img, [pts], colour_t, cv2.LINE_AA)
    # Uneven lighting, blur and noise.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lx, ly = rng.uniform(0, w), rng.uniform(0, h)
    light = 1.0 - rng.uniform(0.0, 0.45) * np.hypot(xx - lx, yy - ly) / math.hypot(w, h)
    img = img * light[..., None] * rng.uniform(0.7, 1.2)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    img += rng.normal(0, rng.uniform(2, 10), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(root: str | Path, per_class: int = 100, seed: int = 0, size: tuple[int, int] = (160, 128),
                  progress: Callable[[int], None] | None = None) -> Path:
    """Write ``root/<class>/<class>_NNNN.png`` for every class; returns ``root``."""
    import cv2

    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rgb = draw_sample(name, rng, size)
            cv2.imwrite(str(folder / f"{name}_{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if progress:
                progress(1)
    return root


def write_video(path: str | Path, per_class: int = 12, seed: int = 10_000, size: tuple[int, int] = (640, 480),
                fps: float = 15.0) -> list[str]:
    """An MJPEG video of unseen samples, classes in runs; returns the true label per frame."""
    import cv2

    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write an MJPEG video here")
    truth = []
    try:
        for name in CLASSES:
            for _ in range(per_class):
                writer.write(cv2.cvtColor(draw_sample(name, rng, size), cv2.COLOR_RGB2BGR))
                truth.append(name)
    finally:
        writer.release()
    return truth

"""A procedurally drawn image dataset, for the demo and for tests: no downloads.

Five classes of shapes (circle, cross, square, star, triangle), each drawn with
real variation: position, scale, rotation, colour (a typical hue per class,
jittered, with random saturation and brightness), textured backgrounds, uneven
lighting, blur and sensor noise. A broken pipeline (wrong preprocessing, swapped
colour channels, scrambled labels, collapsed BatchNorm) scores badly; a working
one scores well, even trained from random weights in a few minutes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

CLASSES = ("circle", "cross", "square", "star", "triangle")
# Each class also has a typical hue (OpenCV hue, 0..180), jittered per image:
# like real objects (ripe tomatoes are red, most leaves green), colour is a
# clue but not a rule. It also makes a channel-order mistake in a pipeline
# cost accuracy, which a shape-only task would hide.
CLASS_HUES = {"circle": 0, "cross": 60, "square": 110, "star": 25, "triangle": 145}


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
    """A textured but low-contrast background: it varies, yet never looks like a shape."""
    import cv2

    kind = rng.integers(4)
    # Desaturated: a grey with a faint tint, so the object's colour stands out.
    base = rng.integers(50, 206) + rng.normal(0, 12, 3).astype(np.float32)
    contrast = rng.uniform(10, 35)
    if kind == 0:  # smooth gradient
        t = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
        img = base + contrast * t * rng.choice([-1, 1], 3) + np.zeros((h, 1, 1), np.float32)
    elif kind == 1:  # faint stripes
        period = rng.uniform(6, 24)
        angle = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)[..., None]
        img = base + 0.5 * contrast * wave
    elif kind == 2:  # blotchy texture
        small = rng.normal(0, contrast, (max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
        img = base + cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    else:  # flat with fine grain
        img = base + rng.normal(0, contrast / 3, (h, w, 3)).astype(np.float32)
    return img


def _object_colour(name: str, rng: np.random.Generator, background: float) -> tuple[float, float, float]:
    """The class hue (jittered), with random saturation, and a brightness away from the background's."""
    import cv2

    hue = (CLASS_HUES[name] + rng.integers(-10, 11)) % 180
    value = rng.uniform(40, max(41.0, background - 60)) if background > 140 else rng.uniform(min(254.0, background + 60), 255)
    hsv = np.array([[[hue, rng.integers(140, 256), value]]], dtype=np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(float(c) for c in rgb)


def draw_sample(name: str, rng: np.random.Generator, size: tuple[int, int] = (160, 128)) -> np.ndarray:
    """One RGB uint8 image of class ``name`` with random nuisance factors."""
    import cv2

    w, h = size
    img = _background(rng, h, w)
    # Distractor: sometimes a thin line that is not a class cue.
    if rng.random() < 0.3:
        p1 = tuple(int(v) for v in (rng.integers(0, w), rng.integers(0, h)))
        p2 = tuple(int(v) for v in (rng.integers(0, w), rng.integers(0, h)))
        cv2.line(img, p1, p2, tuple(float(c) for c in rng.integers(0, 256, 3)), 1, cv2.LINE_AA)
    side = min(w, h)
    radius = rng.uniform(0.22, 0.4) * side
    # Keep the shape inside the central square that a centre crop keeps.
    cx = w / 2 + rng.uniform(-1, 1) * (side / 2 - radius)
    cy = h / 2 + rng.uniform(-1, 1) * (side / 2 - radius)
    colour_t = _object_colour(name, rng, float(img[int(cy), int(cx)].mean()))
    if name == "circle":
        axes = (int(radius), int(radius * rng.uniform(0.85, 1.0)))
        cv2.ellipse(img, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, colour_t, -1, cv2.LINE_AA)
    else:
        pts = _polygon(cx, cy, radius, rng.uniform(0, 2 * math.pi), _shape_points(name))
        cv2.fillPoly(img, [pts], colour_t, cv2.LINE_AA)
    # Uneven lighting, blur and noise.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lx, ly = rng.uniform(0, w), rng.uniform(0, h)
    light = 1.0 - rng.uniform(0.0, 0.3) * np.hypot(xx - lx, yy - ly) / math.hypot(w, h)
    img = img * light[..., None] * rng.uniform(0.8, 1.15)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    img += rng.normal(0, rng.uniform(2, 8), img.shape)
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

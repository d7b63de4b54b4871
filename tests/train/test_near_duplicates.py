"""The near-duplicate threshold, measured on real photos: re-encodes, resizes and bursts vs distinct photos."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest

from edgeclass.device.pipeline.images import load_image
from edgeclass.train.dataset import discover, scan
from edgeclass.train.near_duplicates import NEAR_DUPLICATE_BITS, group_photos, hamming, perceptual_hash
from edgeclass.train.split import plan_split


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _resized(rgb: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    return _jpeg(cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA), 90)


def _burst_frame(rgb: np.ndarray, rng, shift: float, gain: float) -> np.ndarray:
    """The next frame of a burst: the camera moved ``shift`` of the frame, the exposure changed, new sensor noise."""
    h, w = rgb.shape[:2]
    moved = rgb[int(h * shift):, int(w * shift):].astype(np.float32) * gain
    return _jpeg(np.clip(moved + rng.normal(0, 3, moved.shape), 0, 255).astype(np.uint8), 85)


@pytest.fixture(scope="module")
def flowers(shared_data):
    files = sorted((shared_data / "flowers").glob("*/*.jpg"))
    if len(files) < 1800:
        pytest.skip(f"{shared_data / 'flowers'}: expected the 1,800-photo flowers set")
    return files


def test_threshold_holds_variants_together_and_distinct_photos_apart(flowers):
    rng = np.random.default_rng(0)
    originals = [load_image(p) for p in flowers[::30]]  # 60 photos, every class
    variants = {
        "JPEG quality 50": lambda r: _jpeg(r, 50),
        "JPEG quality 95": lambda r: _jpeg(r, 95),
        "resized to 1/2": lambda r: _resized(r, 0.5),
        "resized to 1/4": lambda r: _resized(r, 0.25),
        "burst: 1% shift, +5% exposure": lambda r: _burst_frame(r, rng, 0.01, 1.05),
        "burst: 2% shift, +10% exposure": lambda r: _burst_frame(r, rng, 0.02, 1.10),
    }
    hashes = [perceptual_hash(r) for r in originals]
    worst = {}
    for name, make in variants.items():
        distances = [hamming(h, perceptual_hash(make(r))) for h, r in zip(hashes, originals)]
        worst[name] = max(distances)
        print(f"{name:32s} max {max(distances):2d} bits, mean {np.mean(distances):.1f} (threshold {NEAR_DUPLICATE_BITS})")
    assert all(d <= NEAR_DUPLICATE_BITS for d in worst.values()), worst

    sample = [perceptual_hash(load_image(p)) for p in flowers[::6]]  # 300 distinct photos, 44,850 pairs
    distances = np.array([hamming(a, b) for a, b in itertools.combinations(sample, 2)])
    print(f"distinct pairs: {len(distances)}, closest {distances.min()} bits, "
          f"within the threshold {int((distances <= NEAR_DUPLICATE_BITS).sum())}")
    # The flowers set itself holds a few true near-duplicates (and 2 different dandelions 10 bits apart
    # among its 1.6 million pairs), so the bound is a rate: at most 1 pair in 10,000.
    assert (distances <= NEAR_DUPLICATE_BITS).mean() <= 1e-4
    assert np.mean(distances) > 24  # unrelated photos differ in about half of the 64 bits


def test_a_burst_of_real_photos_stays_in_one_split(flowers, tmp_path):
    """Five real photos, each with re-encodes, a resize and burst frames, among 60 others: one split per family."""
    import cv2

    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    families = []
    for label in ("daisy", "roses"):
        (data / label).mkdir(parents=True)
    for k, path in enumerate(flowers[::30]):
        label = "daisy" if k % 2 else "roses"
        shutil.copy(path, data / label / path.name)
        if k < 10:
            rgb = load_image(path)
            family = [f"{label}/{path.name}"]
            for j, image in enumerate([_jpeg(rgb, 60), _resized(rgb, 0.5), _burst_frame(rgb, rng, 0.01, 1.05),
                                       _burst_frame(rgb, rng, 0.02, 0.95)]):
                name = f"{path.stem}_v{j}.jpg"
                cv2.imwrite(str(data / label / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                family.append(f"{label}/{name}")
            families.append(family)
    layout = discover(data)
    records = scan(layout, workers=2)
    plan = plan_split(layout, records, (0.6, 0.2, 0.2), 3)
    where = {records[i].item.rel: s for s, rows in plan.indices.items() for i in rows}
    assert len(plan.groups) == len(families)
    for family in families:
        assert len({where[p] for p in family}) == 1, {p: where[p] for p in family}
    assert len({where[f[0]] for f in families}) > 1  # the families themselves are spread over the splits


def test_grouping_is_transitive_and_exact_copies_group_without_a_hash():
    groups = group_photos(["a", "b", "c", "a", "d"], [0b0, 0b1111, 0xFF, None, None], max_bits=4)
    assert groups == [[0, 1, 2, 3], [4]]

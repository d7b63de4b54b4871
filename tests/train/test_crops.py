"""Random-resized crops of the whole photo: the cache, the crop geometry, and a seeded, resumable order."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeclass.device.bundle import ResizePolicy
from edgeclass.train.config import Augment
from edgeclass.train.crops import (
    MAX_ASPECT,
    WholePhotos,
    WholePhotoWriter,
    cache_short_side,
    crop_batch,
    random_crop_box,
    whole_photo,
)
from edgeclass.train.dataset import discover, scan


def test_whole_photo_keeps_the_whole_picture_at_the_cached_short_side():
    wide = np.zeros((300, 500, 3), np.uint8)
    wide[:, -10:] = 255  # the right edge: a centre crop to a square would lose it
    photo = whole_photo(wide, 258)
    assert photo.shape == (258, 430, 3)
    assert photo[:, -3:].min() == 255, "the photo's edge is missing"
    tall = whole_photo(np.zeros((500, 300, 3), np.uint8), 258)
    assert tall.shape == (430, 258, 3)
    small = whole_photo(np.zeros((100, 120, 3), np.uint8), 258)  # enlarged, as the device enlarges small frames
    assert small.shape == (258, 310, 3)
    panorama = whole_photo(np.zeros((100, 1000, 3), np.uint8), 258)
    assert panorama.shape == (258, int(round(258 * MAX_ASPECT)), 3)
    assert cache_short_side(224) == 258


@pytest.mark.parametrize("min_scale", [0.08, 0.25, 0.6])
def test_crop_boxes_cover_the_asked_area_at_imagenet_aspects_inside_the_photo(min_scale):
    rng = np.random.default_rng(0)
    height, width = 258, 344
    fractions, aspects = [], []
    for _ in range(2000):
        top, left, h, w = random_crop_box(height, width, rng, min_scale)
        assert 0 <= top and 0 <= left and top + h <= height and left + w <= width
        fractions.append(h * w / (height * width))
        aspects.append(w / h)
    fractions, aspects = np.array(fractions), np.array(aspects)
    # Rounding to whole pixels moves an area by a little more than a percent at most.
    assert fractions.min() >= min_scale * 0.97 and fractions.max() <= 1.0
    # Drawn uniformly, but a large crop at a far aspect does not fit and is drawn again (as in
    # torchvision), so the median sits below the middle of the range; whole-photo crops still occur.
    assert min_scale + 0.2 * (1 - min_scale) < np.median(fractions) < (min_scale + 1) / 2
    assert fractions.max() > 0.9
    inside = (aspects >= 0.74) & (aspects <= 1.35)
    assert inside.mean() > 0.97, "most crops keep the 3/4..4/3 aspect range"
    assert aspects.min() < 0.85 and aspects.max() > 1.2, "both orientations are drawn"


def test_a_photo_narrower_than_the_ratio_range_falls_back_to_a_centred_crop():
    rng = np.random.default_rng(1)
    top, left, h, w = random_crop_box(400, 100, rng, 0.99)  # tries fail: 0.99 of the area at <= 4/3 needs w > 100
    assert (left, w) == (0, 100) and h == round(100 / 0.75) and top == (400 - h) // 2
    assert math.isclose(w / h, 0.75, rel_tol=0.01)


@pytest.fixture
def photos(tree, tmp_path):
    layout = discover(tree)
    writer = WholePhotoWriter(tmp_path / "photos.bin", len(layout.items), 74)
    records = scan(layout, workers=2, whole=writer)
    writer.finish()
    return layout, records, WholePhotos(tmp_path / "photos.bin")


def test_the_cache_holds_every_decoded_photo_uncropped(photos, tree):
    from edgeclass.device.pipeline.images import load_image

    layout, records, cached = photos
    assert len(cached) == len(records)
    for row, record in enumerate(records):
        original = load_image(tree / record.item.rel)
        assert cached[row].shape == whole_photo(original, 74).shape
        np.testing.assert_array_equal(cached[row], whole_photo(original, 74))


def test_crops_depend_on_seed_epoch_and_photo_only(photos):
    _, _, cached = photos
    rows = np.arange(len(cached))
    kwargs = dict(min_scale=0.25, flip=True, brightness=0.15, contrast=0.15)
    first = crop_batch(cached, rows, 64, 7, 0, **kwargs)
    assert first.shape == (len(rows), 64, 64, 3) and first.dtype == np.float32
    assert 0 <= first.min() and first.max() <= 255
    np.testing.assert_array_equal(first, crop_batch(cached, rows, 64, 7, 0, **kwargs))
    # The same photo alone, or in another order, gets the same crop: no shared generator.
    np.testing.assert_array_equal(first[5], crop_batch(cached, rows[5:6], 64, 7, 0, **kwargs)[0])
    np.testing.assert_array_equal(first[::-1], crop_batch(cached, rows[::-1], 64, 7, 0, **kwargs))
    assert np.abs(first - crop_batch(cached, rows, 64, 7, 1, **kwargs)).mean() > 5, "another epoch, other crops"
    assert np.abs(first - crop_batch(cached, rows, 64, 8, 0, **kwargs)).mean() > 5, "another seed, other crops"


def test_a_resumed_dataset_continues_with_the_batches_an_uninterrupted_one_draws(photos):
    pytest.importorskip("tensorflow")
    from edgeclass.train.pipeline import make_crop_dataset, steps_per_epoch

    layout, records, cached = photos
    labels = np.array([layout.labels.index(r.item.label) for r in records])
    rows = np.arange(len(records))

    def batches(initial: int):
        ds = make_crop_dataset(cached, rows, labels, len(layout.labels), 8, 64, Augment(), seed=3, epochs=3,
                               initial_epoch=initial)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    steps = steps_per_epoch(len(rows), 8)
    whole, resumed = batches(0), batches(2)
    assert len(whole) == 3 * steps and len(resumed) == steps
    for (x, y), (rx, ry) in zip(whole[2 * steps:], resumed):
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)
    # Every photo once per epoch, in an order of its own each epoch.
    epoch_labels = [np.concatenate([y.argmax(1) for _, y in whole[e * steps:(e + 1) * steps]]) for e in range(3)]
    assert all(sorted(e) == sorted(labels) for e in epoch_labels)
    assert not np.array_equal(epoch_labels[0], epoch_labels[1])


def test_evaluation_still_sees_the_device_centre_crop_when_training_crops(photos, tree):
    """The head's features, validation and test come from the centre-crop cache: the device's pixels."""
    from edgeclass.device.pipeline.images import load_image
    from edgeclass.device.pipeline.preprocess import resize_image

    layout, records, _ = photos
    cache = np.zeros((len(layout.items), 64, 64, 3), np.uint8)
    scan(layout, cache, (64, 64), ResizePolicy.CENTER_CROP, workers=2)
    for row, record in enumerate(records):
        expected = resize_image(load_image(tree / record.item.rel), 64, 64, ResizePolicy.CENTER_CROP)
        np.testing.assert_array_equal(cache[row], expected)


def test_augment_crop_option():
    assert Augment().crop == 0.25
    assert Augment.parse("flip,crop").crop == 0.25
    assert Augment.parse("flip,crop=0.08").describe() == "flip,crop=0.08"
    assert Augment.parse("flip,zoom=0.2").crop == 0.0, "naming the augmentations leaves crop off unless named"
    with pytest.raises(Exception, match=r"crop=1.2 must be in \[0, 1\)"):
        Augment.parse("crop=1.2")

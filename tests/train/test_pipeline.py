"""The image a training batch sees is the image the device preprocesses (TensorFlow, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclass.device.pipeline.images import load_image
from edgeclass.device.bundle import InputSpec, ResizePolicy
from edgeclass.device.pipeline.preprocess import Preprocessor, resize_image
from edgeclass.train.config import Augment
from edgeclass.train.dataset import discover, scan

pytest.importorskip("tensorflow")

from edgeclass.train.pipeline import make_dataset  # noqa: E402

SIZE = 96


def _batches(root, augment=None, size=SIZE):
    layout = discover(root)
    cache = np.zeros((len(layout.items), size, size, 3), np.uint8)
    records = scan(layout, cache, (size, size), ResizePolicy.CENTER_CROP, workers=2)
    labels = np.array([layout.labels.index(r.item.label) for r in records])
    rows = [i for i, r in enumerate(records) if r.ok]
    ds = make_dataset(cache, rows, labels, len(layout.labels), 8, augment=augment)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return layout, [records[i] for i in rows], np.concatenate(xs), np.concatenate(ys)


def _check_equal_to_device(root, layout, records, xs, ys):
    """Same size, same (RGB) order, same values: tolerance 0, since both are the same uint8 pixels."""
    device = Preprocessor(InputSpec(SIZE, SIZE, dtype="float32"))  # the device's float path, normalisation in the model
    for x, y, record in zip(xs, ys, records):
        path = root / record.item.rel
        expected = device(load_image(path))[0]
        assert x.shape == expected.shape == (SIZE, SIZE, 3)
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, expected, err_msg=str(path))
        assert layout.labels[int(y.argmax())] == record.item.label


def test_training_batches_equal_device_preprocessing_on_generated_images(tree):
    import cv2

    # A pure red, wide image: catches a BGR/RGB swap and a wrong crop at once.
    red = np.zeros((50, 200, 3), np.uint8)
    red[:, 75:125, 2] = 255  # BGR: red only in the centre square
    cv2.imwrite(str(tree / "circles" / "red.png"), red)
    layout, records, xs, ys = _batches(tree)
    _check_equal_to_device(tree, layout, records, xs, ys)
    i = next(k for k, r in enumerate(records) if r.item.rel.endswith("red.png"))
    centre = xs[i][SIZE // 2, SIZE // 2]
    assert centre.tolist() == [255.0, 0.0, 0.0]


def test_training_batches_equal_device_preprocessing_on_real_photos(shared_data, tmp_path):
    """A few real flowers photos (JPEGs of assorted sizes) through both paths."""
    import shutil

    flowers = shared_data / "flowers"
    for label in ("daisy", "roses"):
        (tmp_path / label).mkdir()
        for path in sorted((flowers / label).glob("*.jpg"))[:6]:
            shutil.copy(path, tmp_path / label / path.name)  # a tmp copy: the test never touches shared data
    layout, records, xs, ys = _batches(tmp_path)
    assert len(records) == 12
    _check_equal_to_device(tmp_path, layout, records, xs, ys)


def test_augmentation_changes_pixels_within_range_and_keeps_shape(tree):
    _, _, plain, _ = _batches(tree)
    _, _, augmented, _ = _batches(tree, augment=Augment())
    assert augmented.shape == plain.shape
    assert augmented.min() >= 0 and augmented.max() <= 255
    assert np.abs(augmented - plain).mean() > 1.0


def test_augment_option_parsing():
    assert Augment.parse("none").enabled is False
    assert Augment.parse("default") == Augment()
    parsed = Augment.parse("flip,zoom=0.2")
    assert (parsed.flip, parsed.zoom, parsed.rotation, parsed.brightness) == (True, 0.2, 0.0, 0.0)
    assert parsed.describe() == "flip,zoom=0.2"
    with pytest.raises(Exception, match="unknown augmentation 'blur'"):
        Augment.parse("flip,blur=0.1")
    with pytest.raises(Exception, match=r"zoom=1.5 must be in \[0, 1\)"):
        Augment.parse("zoom=1.5")


def test_resize_is_the_device_function():
    """Guard against a second resize implementation creeping into the trainer."""
    import inspect

    import edgeclass.train.dataset as dataset

    assert dataset.resize_image is resize_image
    assert "cv2.resize" not in inspect.getsource(dataset)

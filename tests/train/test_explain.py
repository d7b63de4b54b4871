"""Grad-CAM on models whose evidence is known by construction, and the choice of images to explain."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edgeclass.train.explain import choose  # noqa: E402
from edgeclass.train.gradcam import GradCamError, heatmaps, overlay, target_layer  # noqa: E402

PATCH = (slice(4, 12), slice(20, 30))  # rows, columns of the bright square


def _brightness_model(branching: bool = False):
    """input -> 'backbone' (a 1x1 convolution that fires on bright pixels only) -> pool -> softmax.

    Class 1's logit grows with the bright area, class 0's shrinks: the evidence
    for class 1 is exactly the bright pixels, and there is none for class 0.
    """
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3), name="image")
    conv = layers.Conv2D(1, 1, activation="relu", name="backbone")
    x = conv(inputs)
    if branching:  # a residual join: no longer a chain of layers
        x = layers.Add(name="join")([x, layers.Conv2D(1, 1, name="side")(inputs)])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    dense = layers.Dense(2, activation="softmax", name="scores")
    model = keras.Model(inputs, dense(x), name="brightness")
    conv.set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32), np.array([-150.0], np.float32)])
    dense.set_weights([np.array([[-0.5, 0.5]], np.float32), np.zeros(2, np.float32)])
    return model


def _image(patch=PATCH) -> np.ndarray:
    image = np.full((32, 32, 3), 60, np.uint8)
    image[patch] = 250
    return image


def test_heatmap_of_the_class_lies_on_its_evidence():
    model = _brightness_model()
    assert target_layer(model).name == "backbone"
    moved = (slice(18, 28), slice(2, 10))
    maps = heatmaps(model, np.stack([_image(), _image(moved), _image()]), [1, 1, 0])
    assert maps.shape == (3, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    for heat, patch in ((maps[0], PATCH), (maps[1], moved)):
        inside = np.zeros((32, 32), bool)
        inside[patch] = True
        assert heat[inside].min() == pytest.approx(1.0)  # the whole bright square
        assert heat[~inside].max() == 0.0  # and nothing else
    assert maps[2].max() == 0.0  # no pixel is evidence for the class that bright pixels argue against


def test_a_branching_model_is_refused_not_explained_wrongly():
    with pytest.raises(GradCamError, match="not a plain chain"):
        heatmaps(_brightness_model(branching=True), _image()[None], [1])


def test_overlay_keeps_the_image_and_colours_the_heat():
    image = _image()
    heat = np.zeros((8, 8), np.float32)
    heat[1:3, 5:7] = 1.0
    out = overlay(image, heat)
    assert out.shape == image.shape and out.dtype == np.uint8
    hot, cold = out[8, 24].astype(int), out[28, 4].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # red over the heat, blue elsewhere


def test_choose_takes_the_surest_errors_and_a_spread_of_right_answers():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    probs = np.array([
        [0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1],  # class 0: three right, one wrong (0.7)
        [0.05, 0.95, 0.0], [0.9, 0.1, 0.0], [0.1, 0.8, 0.1],  # class 1: one wrong at 0.9
        [0.0, 0.4, 0.6],  # class 2: right
    ])
    chosen = choose(y_true, probs, worst=5, per_class=2)
    assert chosen[:2] == [("worst", 5), ("worst", 3)]  # most confident error first
    correct = [k for kind, k in chosen if kind == "correct"]
    assert correct == [0, 2, 4, 6, 7]  # per class: the surest and the least sure right answer

"""Grad-CAM heatmaps: where in the image the model found the evidence for a class (Selvaraju et al. 2017).

The heatmap of class ``c`` weighs each channel of a late convolutional
activation ``A`` by the mean gradient of ``c``'s logit (the score before
softmax) over that channel, sums, and keeps the positive part. For the
MobileNet backbones the activation is the backbone's output, their last
convolution's activation (``out_relu`` in MobileNetV2, the activation after
``conv_1`` in MobileNetV3): the last layer that still knows where things are.
Other models use their last layer with a spatial (4-D) output.

The images are the ones the model saw, the device's centre crop at the input
size, so the heatmap lines up with the pixels under it.
"""

from __future__ import annotations

import logging

import numpy as np

from edgeclass.device.errors import EdgeclassError

from .model import BACKBONE_NAME

log = logging.getLogger(__name__)


class GradCamError(EdgeclassError):
    """No heatmap can be computed for this model."""


def target_layer(model):
    """The top-level layer whose output Grad-CAM uses (see the module docstring)."""
    names = [layer.name for layer in model.layers]
    if BACKBONE_NAME in names:
        layer = model.get_layer(BACKBONE_NAME)
        if len(layer.output.shape) == 4:
            return layer
    for layer in reversed(model.layers):
        if len(getattr(layer, "output", np.zeros(0)).shape) == 4 and layer is not model.layers[0]:
            return layer
    raise GradCamError(f"{model.name}: no layer with a spatial (height x width x channels) output for Grad-CAM")


def _logits(layers, x):
    """Run ``layers`` in order on ``x``; the last softmax is left out (Grad-CAM differentiates the logit)."""
    import keras

    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        if last and getattr(layer, "layers", None):
            return _logits(layer.layers, x)
        if last and isinstance(layer, keras.layers.Dense) and getattr(layer.activation, "__name__", "") == "softmax":
            out = keras.ops.matmul(x, layer.kernel)
            return out + layer.bias if layer.use_bias else out
        if last and isinstance(layer, keras.layers.Softmax):
            return x
        x = layer(x, training=False)
    return x


def heatmaps(model, images: np.ndarray, classes, batch_size: int = 16) -> np.ndarray:
    """(N, h, w) Grad-CAM maps in [0, 1] of ``classes[i]`` on ``images[i]`` (uint8 or float 0..255 RGB).

    The model must be a chain of layers (input -> ... -> softmax), as the
    trainer's models are; a forward pass through the pieces is checked
    against the whole model, so a graph this cannot split is refused rather
    than explained wrongly.
    """
    import tensorflow as tf

    target = target_layer(model)
    layers = [layer for layer in model.layers if not layer.__class__.__name__ == "InputLayer"]
    cut = layers.index(target)
    front, back = layers[: cut + 1], layers[cut + 1:]
    classes = np.asarray(classes, np.int64)
    maps = []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(np.asarray(images[start:start + batch_size], np.float32))
        try:
            for layer in front:
                x = layer(x, training=False)
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = _logits(back, x)
                picked = tf.gather(logits, classes[start:start + batch_size], axis=1, batch_dims=1)
        except (TypeError, ValueError) as exc:  # a layer that wants several inputs: the graph branches
            raise GradCamError(f"{model.name}: the model is not a plain chain of layers ({exc.__class__.__name__}); "
                               "no heatmaps") from None
        if start == 0:
            whole = np.asarray(model(np.asarray(images[:batch_size], np.float32), training=False))
            split = tf.nn.softmax(logits).numpy()
            if not np.allclose(whole, split, atol=1e-4):
                raise GradCamError(f"{model.name}: the model is not a plain chain of layers; no heatmaps")
        grads = tape.gradient(picked, x).numpy()
        activation = x.numpy()
        weights = grads.mean(axis=(1, 2), keepdims=True)  # one weight per channel
        cam = np.maximum((weights * activation).sum(axis=-1), 0.0)
        peak = cam.max(axis=(1, 2), keepdims=True)
        maps.append(np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0))
    if not maps:
        return np.zeros((0, 1, 1), np.float32)
    return np.concatenate(maps).astype(np.float32)


def overlay(image: np.ndarray, heat: np.ndarray, strength: float = 0.45) -> np.ndarray:
    """The heatmap, upsampled to the image and coloured (blue = nothing, red = strongest), over the image."""
    import cv2

    h, w = image.shape[:2]
    up = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(up * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return np.clip((1 - strength) * image.astype(np.float32) + strength * colour, 0, 255).astype(np.uint8)

"""The classifier: an ImageNet MobileNet backbone and a small softmax head.

The model takes float32 RGB pixels 0..255 (already resized by the device's
``resize_image``) and normalises inside itself, so the converter and the Pi
never need mean/std: MobileNetV2 gets a ``Rescaling(1/127.5, offset=-1)``
layer; Keras' MobileNetV3 carries its own rescaling (``include_preprocessing``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgeclass.device.errors import EdgeclassError

from .config import Backbone, TrainConfig

log = logging.getLogger(__name__)

V2_ROWS = (96, 128, 160, 192, 224)  # input sizes Keras publishes MobileNetV2 weights for
BACKBONE_NAME = "backbone"


class WeightsError(EdgeclassError):
    """Backbone weights cannot be found or loaded."""


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights: ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "models"


def imagenet_weights_file(backbone: Backbone, alpha: float, input_size: int, minimalistic: bool) -> str:
    """The file name Keras looks for in its cache for ``weights="imagenet"`` without the top."""
    if backbone is Backbone.MOBILENET_V2:
        # Keras falls back to the 224 weights for sizes it has no file for.
        rows = input_size if input_size in V2_ROWS else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    kind = "small" if backbone is Backbone.MOBILENET_V3_SMALL else "large"
    return f"weights_mobilenet_v3_{kind}{'_minimalistic' if minimalistic else ''}_224_{alpha}_float_no_top_v2.h5"


def _constructor(backbone: Backbone):
    import keras

    return {
        Backbone.MOBILENET_V2: keras.applications.MobileNetV2,
        Backbone.MOBILENET_V3_SMALL: keras.applications.MobileNetV3Small,
        Backbone.MOBILENET_V3_LARGE: keras.applications.MobileNetV3Large,
    }[backbone]


def build_backbone(config: TrainConfig, pretrained: bool = True):
    """The headless backbone with the requested weights; errors say which file is missing and where it goes.

    ``pretrained=False`` builds the same architecture with no weights (to load a checkpoint into).
    """
    size = config.input_size
    kwargs = dict(include_top=False, input_shape=(size, size, 3), alpha=config.alpha, name=BACKBONE_NAME)
    if config.backbone is not Backbone.MOBILENET_V2:
        kwargs.update(minimalistic=config.minimalistic, include_preprocessing=True)
        if not config.minimalistic and pretrained:
            log.warning(
                "MobileNetV3 without --minimalistic uses hard-swish and squeeze-excite: "
                "the Edge TPU cannot run hard-swish, so that model will run on the CPU only"
            )
    weights = config.weights
    if not pretrained:
        return _constructor(config.backbone)(weights=None, **kwargs)
    if weights == "imagenet":
        name = imagenet_weights_file(config.backbone, config.alpha, size, config.minimalistic)
        local = keras_models_dir() / name
        if not local.exists():
            log.info("%s is not in %s: asking Keras to download it", name, local.parent)
        try:
            return _constructor(config.backbone)(weights="imagenet", **kwargs)
        except Exception as exc:  # download failures surface as several exception types
            raise WeightsError(
                f"ImageNet weights file {name} is missing and could not be downloaded ({type(exc).__name__}): "
                f"put it in {local.parent} ($KERAS_HOME/models, default ~/.keras/models), "
                "or pass --weights PATH to a backbone weights file, or --weights none"
            ) from None
    if weights == "none":
        log.warning("training from random weights (--weights none): expect much lower accuracy than with imagenet")
        return _constructor(config.backbone)(weights=None, **kwargs)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"--weights {weights}: no such file (expected imagenet, none, or a backbone .h5 weights file)")
    model = _constructor(config.backbone)(weights=None, **kwargs)
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise WeightsError(
            f"{path}: does not fit a headless {config.backbone.value} alpha {config.alpha:g} backbone ({exc})"
        ) from None
    return model


def build_model(config: TrainConfig, num_classes: int, backbone=None, pretrained: bool = True,
                sync_batchnorm: bool = False):
    """Input (float32 0..255 RGB) -> [rescale] -> backbone -> pool -> dropout -> softmax (float32).

    ``sync_batchnorm``: a backbone trained from scratch on several replicas
    computes its BatchNorm statistics over the global batch (see below).
    """
    import keras
    from keras import layers

    backbone = backbone if backbone is not None else build_backbone(config, pretrained)
    size = config.input_size
    inputs = keras.Input((size, size, 3), dtype="float32", name="image")
    x = inputs
    if config.backbone is Backbone.MOBILENET_V2:
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(x)  # 0..255 -> -1..1
    if from_scratch(config):
        # Random weights have no statistics worth keeping: BatchNorm must learn
        # them (batch statistics in training, moving averages at inference).
        # Keras' MobileNet momentum of 0.999 needs thousands of steps before the
        # moving averages catch up; a short run would then predict one class for
        # everything in inference mode. 0.9 converges within an epoch or two.
        for layer in batchnorm_layers(backbone):
            layer.momentum = 0.9
            # Under MirroredStrategy each replica sees its share of the batch: synchronised,
            # the mean and variance are all-reduced over the global batch and every replica
            # writes the same moving averages (unsynchronised, each replica would keep its
            # own in its copy of the variable). Keras reads the attribute when the layer is
            # called, so setting it here, before fit traces the model, takes effect.
            layer.synchronized = sync_batchnorm
        x = backbone(x)
    else:
        # training=False keeps BatchNorm in inference mode even after unfreezing:
        # fine-tuning on a few thousand images must not overwrite ImageNet's statistics.
        x = backbone(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    head = build_head(num_classes, config.dropout)
    outputs = head(x)
    return keras.Model(inputs, outputs, name=f"edgeclass_{config.backbone.value}")


def batchnorm_layers(model) -> list:
    """The BatchNormalization layers of ``model`` (one level deep: the backbone's own layers)."""
    from keras import layers

    return [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]


def dtype_summary(model) -> dict:
    """What ``model`` computes in and stores: the backbone layers' compute dtypes, every variable's dtype,
    the output's dtype (mixed precision: float16, float32, float32)."""
    from keras import layers

    backbone = model.get_layer(BACKBONE_NAME)
    return {
        "policy": backbone.dtype_policy.name,
        "backbone_compute_dtypes": sorted({layer.compute_dtype for layer in backbone.layers
                                           if not isinstance(layer, layers.InputLayer)}),
        "variable_dtypes": sorted({str(v.dtype) for v in model.weights}),
        "output_dtype": str(model.outputs[0].dtype),
    }


def from_scratch(config: TrainConfig) -> bool:
    """True when the backbone starts from random weights (``--weights none``)."""
    return config.weights == "none"


def build_head(num_classes: int, dropout: float):
    """The trainable head on pooled features; the softmax stays float32 under mixed precision."""
    import keras
    from keras import layers

    return keras.Sequential(
        [layers.Dropout(dropout, name="dropout"), layers.Dense(num_classes, activation="softmax", dtype="float32", name="scores")],
        name="head",
    )


def feature_extractor(model):
    """The frozen part of ``model``: image -> pooled features (input to the head)."""
    import keras

    return keras.Model(model.inputs, model.get_layer("pool").output, name="features")


def set_fine_tuning(model, layers_to_train: int, train_batchnorm: bool = False) -> int:
    """Freeze the backbone except its top ``layers_to_train`` layers (-1 = all).

    BatchNorm stays frozen unless ``train_batchnorm`` (a backbone trained from
    scratch, whose statistics must be learnt). Returns the number of trainable
    backbone layers.
    """
    from keras import layers

    backbone = model.get_layer(BACKBONE_NAME)
    backbone.trainable = layers_to_train != 0
    if layers_to_train == 0:
        return 0
    start = 0 if layers_to_train < 0 else max(0, len(backbone.layers) - layers_to_train)
    trainable = 0
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= start and (train_batchnorm or not isinstance(layer, layers.BatchNormalization))
        trainable += layer.trainable and bool(layer.weights)
    return trainable

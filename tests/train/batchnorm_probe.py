"""Run in a fresh process (TensorFlow splits the CPU only before it first uses its devices):
build the training model of a ``--weights none --devices cpu:2`` run as ``edgeclass train`` does,
take one training-mode step on two replicas fed different images, and print what its BatchNorm
layers did as JSON on stdout.
"""

from __future__ import annotations

import json

import numpy as np

SIZE = 32  # the smallest input the trainer accepts: the graph, not the pixels, is what this checks


def main() -> None:
    from edgeclass.train.config import TrainConfig
    from edgeclass.train.fit import build_training_model, device_setup
    from edgeclass.train.model import BACKBONE_NAME, batchnorm_layers, from_scratch, set_fine_tuning

    config = TrainConfig("unused", alpha=0.35, input_size=SIZE, weights="none", devices="cpu:2")
    placement = device_setup(config)

    import keras
    import tensorflow as tf

    model = build_training_model(config, 3, placement, pretrained=False)
    set_fine_tuning(model, config.fine_tune_top, train_batchnorm=from_scratch(config))  # as fine_tune() does
    backbone = model.get_layer(BACKBONE_NAME)
    layers = batchnorm_layers(backbone)

    # A global batch of 8: dark images go to replica 0, bright ones to replica 1 (a distributed
    # dataset splits each batch in order, as fit does), through a traced step like fit's.
    rng = np.random.default_rng(0)
    dark, bright = rng.uniform(0, 60, (4, SIZE, SIZE, 3)), rng.uniform(180, 255, (4, SIZE, SIZE, 3))
    x = np.concatenate([dark, bright]).astype("float32")
    batches = placement.strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(x).batch(8))

    @tf.function
    def step(batch):
        placement.strategy.run(lambda images: model(images, training=True), args=(batch,))

    step(next(iter(batches)))

    # The first BatchNorm normalises Conv1's output: its mean over the global batch, and over replica 0's half.
    conv = keras.Model(backbone.input, backbone.get_layer("Conv1").output)
    first = backbone.get_layer("bn_Conv1")
    copies = lambda layer: [np.asarray(v) for v in layer.moving_mean.value.values]  # noqa: E731  one per replica
    print(json.dumps({
        "replicas": placement.replicas,
        "batchnorm_layers": len(layers),
        "synchronized": sum(layer.synchronized for layer in layers),
        "trainable": sum(layer.trainable for layer in layers),
        "momentum": sorted({layer.momentum for layer in layers}),
        "replica_copies_differ": sum(not np.allclose(*copies(layer), atol=1e-7) for layer in layers),
        "first_moving_mean": copies(first)[0].tolist(),
        "global_batch_mean": np.asarray(conv(x / 127.5 - 1)).mean(axis=(0, 1, 2)).tolist(),
        "replica0_mean": np.asarray(conv(x[:4] / 127.5 - 1)).mean(axis=(0, 1, 2)).tolist(),
    }))


if __name__ == "__main__":
    main()

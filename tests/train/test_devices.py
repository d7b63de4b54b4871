"""Multi-replica training and mixed precision, on a machine with no GPU.

``--devices cpu:2`` splits the CPU into two logical devices, so the real
``tf.distribute.MirroredStrategy`` path runs here: two replicas, the dataset's
global batches split between them, gradients all-reduced, BatchNorm
statistics all-reduced when they train. What cannot be exercised without
GPUs: GPU placement itself, NCCL all-reduce (on CPUs TensorFlow all-reduces
with its collective ring), and any speed-up (two logical CPUs share the same
cores). Runs of the CLI are subprocesses: TensorFlow splits the CPU only
before it first uses its devices, which the test process may already have done.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeclass.train import rundir
from edgeclass.train.config import ConfigError, parse_devices

from ..conftest import run_edgeclass
from .conftest import CLASSES, make_tree, pretrained, probe, read_history, tiny_train_args
from .test_train import _start, _wait_for_epoch


@pytest.mark.parametrize("text, parsed", [("auto", ("auto", None)), ("cpu", ("cpu", None)), ("cpu:2", ("cpu", 2)),
                                          ("GPU", ("gpu", None)), (" gpu:4 ", ("gpu", 4))])
def test_devices_values(text, parsed):
    assert parse_devices(text) == parsed


# Importing TensorFlow is an error in this process: a bad --devices must be refused before it loads.
@pytest.mark.parametrize("value, message", [
    ("cpu:0", "--devices 'cpu:0': the count must be 1 or more, e.g. cpu:2"),
    ("gpu:two", "--devices 'gpu:two': 'two' is not a whole number; expected auto, cpu, cpu:N, gpu or gpu:N"),
    ("tpu", "--devices 'tpu': expected auto, cpu, cpu:N, gpu or gpu:N (N = how many devices, e.g. cpu:2)"),
    ("auto:2", "--devices 'auto:2': expected auto, cpu, cpu:N, gpu or gpu:N"),
    ("cpu:1000", "--devices 'cpu:1000': at most 64 logical CPU devices (cpu:2 is enough to try several replicas)"),
], ids=["zero", "not-a-number", "unknown-kind", "auto-with-count", "too-many"])
def test_bad_devices_is_one_line_before_tensorflow_loads(tree, tmp_path, value, message):
    report, stderr = probe("train", tree, "-o", tmp_path / "run", "--devices", value, timeout=60)
    assert report["code"] == 2, stderr
    assert not report["tensorflow"] and not report["keras"], "imported before the options were checked"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), stderr
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="--devices"):
        parse_devices(value)


def _accuracy(out: Path) -> float:
    """model.keras on every photo of the run, through the device's own loading and centre crop."""
    import keras

    from edgeclass.device.bundle import ResizePolicy
    from edgeclass.device.pipeline.images import load_image
    from edgeclass.device.pipeline.preprocess import resize_image

    run = rundir.load_training_dir(out)
    items = [item for name in ("train", "val", "test") for item in run.split_items(name)]
    size = run.input_size
    x = np.stack([resize_image(load_image(p), size, size, ResizePolicy.CENTER_CROP) for p, _ in items])
    x = x.astype(np.float32)
    probs = keras.models.load_model(out / rundir.MODEL).predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    return float((probs.argmax(axis=1) == [y for _, y in items]).mean())


@pytest.mark.slow
def test_two_logical_cpus_train_with_mirrored_strategy_and_resume(tmp_path):
    """Two replicas on random crops (the default augmentation), interrupted after a fine-tuning epoch and resumed."""
    data = make_tree(tmp_path / "data", {c: 16 for c in CLASSES})
    out = tmp_path / "run"
    batch = 16
    proc = _start("train", data, "-o", out, *tiny_train_args(epochs=3, head_epochs=3), "--patience", "0",
                  "--devices", "cpu:2")
    _wait_for_epoch(out, proc, 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = (f"training on 2 replicas with MirroredStrategy (CPU:0, CPU:1): "
            f"batch {batch} per replica = {2 * batch} global")
    assert line in err
    assert "Reduce to /job:" not in err  # TensorFlow's per-reduction INFO lines only with -v
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["phase"] == "finetune", "the interrupt came after fine-tuning ended"

    # No --devices: a resumed run keeps the devices and the per-replica batch it started with.
    result = run_edgeclass("train", data, "-o", out, "--resume", timeout=600, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr
    assert f"{line}; learning rates x2 (head 0.002, fine-tune 0.0002)" in result.stderr
    assert f"resuming fine-tuning after epoch {state['epoch']} of 3" in result.stderr

    config = json.loads((out / rundir.CONFIG).read_text())
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert config["devices"] == "cpu:2" and config["batch_size"] == batch
    for training in (config["training"], metrics["training"]):
        assert training["replicas"] == 2 and training["strategy"] == "MirroredStrategy"
        assert training["devices"] == ["/device:CPU:0", "/device:CPU:1"]
        assert (training["batch_per_replica"], training["global_batch"]) == (batch, 2 * batch)
        assert training["lr_scale"] == 2
        assert training["head_lr"] == pytest.approx(2 * 1e-3) and training["lr"] == pytest.approx(2 * 1e-4)
        assert training["synchronized_batchnorm"] is (not pretrained())  # BatchNorm trains only from scratch
    # The head trained at the scaled rate; the optimizer itself counted one step per global batch
    # over three epochs (steps of 16 would be more), across the interruption.
    history = read_history(out)
    head_rates = [float(h["lr"]) for h in history if h["phase"] == "head"]
    assert head_rates and all(rate == pytest.approx(2e-3) for rate in head_rates)
    assert sorted({int(h["epoch"]) for h in history if h["phase"] == "finetune"}) == [1, 2, 3]
    train_images = len(rundir.load_training_dir(out).split["train"])
    assert metrics["training"]["finetune_optimizer_steps"] == 3 * math.ceil(train_images / (2 * batch))
    assert math.ceil(train_images / batch) > math.ceil(train_images / (2 * batch))  # the count tells them apart

    if pretrained():
        assert _accuracy(out) >= 0.8


@pytest.mark.slow
def test_batchnorm_from_scratch_is_synchronised_across_replicas():
    probe = Path(__file__).with_name("batchnorm_probe.py")
    result = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["replicas"] == 2
    layers = found["batchnorm_layers"]
    assert layers == 52  # MobileNetV2's
    assert found["synchronized"] == found["trainable"] == layers and found["momentum"] == [0.9]
    # Synchronised: both replicas computed the global batch's statistics and hold the same moving
    # averages (unsynchronised, replica 0 would have kept the mean of its dark half only).
    assert found["replica_copies_differ"] == 0
    moved = 0.1 * np.asarray(found["global_batch_mean"])  # momentum 0.9, moving mean starting at 0
    np.testing.assert_allclose(found["first_moving_mean"], moved, rtol=1e-3, atol=1e-6)
    assert not np.allclose(found["first_moving_mean"], 0.1 * np.asarray(found["replica0_mean"]), rtol=0.1)


@pytest.mark.slow
def test_mixed_precision_trains_in_float16_and_exports_float32(tmp_path):
    import keras

    data = make_tree(tmp_path / "data", {c: 16 for c in CLASSES})
    out = tmp_path / "run"
    result = run_edgeclass("train", data, "-o", out, *tiny_train_args(epochs=2, head_epochs=3),
                           "--mixed-precision", "on", timeout=600, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr
    assert "training on CPU:0: batch 16, mixed precision (mixed_float16)" in result.stderr

    config = json.loads((out / rundir.CONFIG).read_text())
    training = json.loads((out / "report" / "metrics.json").read_text())["training"]
    assert config["mixed_precision"] == "on" and config["training"]["precision_policy"] == "mixed_float16"
    assert training["mixed_precision"] is True and training["precision_policy"] == "mixed_float16"
    # The model that trained: float16 compute, float32 variables, float32 softmax.
    assert training["training_model"] == {"policy": "mixed_float16", "backbone_compute_dtypes": ["float16"],
                                          "variable_dtypes": ["float32"], "output_dtype": "float32"}
    assert training["finetune_epochs"] == 2 and np.isfinite(training["best_val_loss"])

    # The model the converter gets: float32 throughout.
    model = keras.models.load_model(out / rundir.MODEL)
    assert {w.dtype for w in model.weights} == {"float32"}
    policies = {layer.dtype_policy.name for layer in model.layers + model.get_layer("backbone").layers}
    assert policies == {"float32"}
    assert model.outputs[0].dtype == "float32"
    assert model.predict(np.full((1, 64, 64, 3), 128, np.float32), verbose=0).dtype == np.float32
    if pretrained():
        assert _accuracy(out) >= 0.8

"""``--refit``: the epochs validation chose, trained again on train+val; the final model is the refit one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeclass.train.refit import chosen_epochs

from .conftest import CLASSES, invoke, make_tree, tiny_train_args


def test_the_refit_trains_for_the_epochs_validation_chose():
    assert chosen_epochs({"best_epoch": "finetune 7", "head_best_epoch": 12, "head_epochs_run": 17}) == (12, 7)
    # Fine-tuning never beat the head: the refit trains the head only, for the head's best epoch.
    assert chosen_epochs({"best_epoch": "head 9", "head_best_epoch": 9, "head_epochs_run": 14}) == (9, 0)
    # A run saved before the head's best epoch was recorded: its head epochs.
    assert chosen_epochs({"best_epoch": "finetune 2", "head_epochs_run": 5}) == (5, 2)


@pytest.mark.slow
def test_refit_trains_on_train_and_val_for_the_epochs_validation_chose(tmp_path):
    pytest.importorskip("tensorflow")
    import keras

    data = make_tree(tmp_path / "data", {c: 16 for c in CLASSES})
    out = tmp_path / "run"
    result = invoke("train", data, "-o", out, *tiny_train_args(epochs=3, head_epochs=4), "--patience", "0", "--refit")
    assert result.exit_code == 0, (result.output, result.exception)

    state = json.loads((out / "checkpoints" / "state.json").read_text())
    split = json.loads((out / "split.json").read_text())
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["refit"] is True
    refit = metrics["training"]["refit"]
    assert (refit["head_epochs"], refit["finetune_epochs"]) == chosen_epochs(state)
    assert refit["images"] == len(split["train"]) + len(split["val"])

    # The model written is the refit one, not the first run's best checkpoint.
    final = keras.saving.load_model(out / "model.keras")
    from edgeclass.train.fit import export_model
    from edgeclass.train.config import TrainConfig

    train_config = TrainConfig.from_json(config)
    refitted = export_model(train_config, len(CLASSES), out / "checkpoints" / "refit.weights.h5")
    first = export_model(train_config, len(CLASSES), out / "checkpoints" / state["best_weights"])
    for mine, theirs in zip(final.get_weights(), refitted.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert any(not np.array_equal(a, b) for a, b in zip(final.get_weights(), first.get_weights()))

    # Validation has been trained on: no temperature is fitted on it, and the report says why.
    calibration = metrics["calibration"]
    assert "temperature" not in calibration and "--refit" in calibration["decision"], calibration

"""Bias correction on a really trained, really converted MobileNetV2-style network (depthwise convolutions,
BatchNorm folded into them, fused ReLU6, a residual add), measured by the interpreter on images the
correction never saw."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclass.device.bundle import load_bundle
from edgeclass.device.bundle import InputSpec, ResizePolicy

pytestmark = pytest.mark.slow

SIZE = 32


def _mobile_blocks(size: int, classes: int):
    """Two inverted-residual blocks as MobileNetV2 builds them (the case bias correction exists for)."""
    import keras
    from keras import layers

    def bn(x):
        return layers.BatchNormalization(momentum=0.9)(x)

    inp = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = layers.ReLU(6.0)(bn(layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)))
    shortcut = x
    y = layers.ReLU(6.0)(bn(layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)))
    y = bn(layers.Conv2D(16, 1, use_bias=False)(y))  # linear bottleneck: no activation
    x = layers.Add()([shortcut, y])
    x = layers.ReLU(6.0)(bn(layers.Conv2D(48, 1, use_bias=False)(x)))
    x = layers.ReLU(6.0)(bn(layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)))
    x = layers.ReLU(6.0)(bn(layers.Conv2D(32, 1, use_bias=False)(x)))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(classes, activation="softmax")(x))


@pytest.fixture(scope="module")
def converted(tiny_dataset, tmp_path_factory):
    """(int8 bytes, float bytes, correction images, held-out images, int8 spec, float spec) of the trained blocks.

    Corrected on the train split; everything is measured on val + test, which the correction never sees.
    """
    import keras

    from edgeclass.convert import quantize
    from edgeclass.convert.pipeline import specs_from_model

    from .rundir_factory import LABELS, load_split

    data, split = tiny_dataset
    keras.utils.set_random_seed(0)
    model = _mobile_blocks(SIZE, len(LABELS))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = load_split(data, split["train"], SIZE)
    model.fit(x, y, epochs=30, batch_size=8, verbose=0)
    held_x, held_y = load_split(data, split["val"] + split["test"], SIZE)
    accuracy = float((model.predict(held_x, verbose=0).argmax(1) == held_y).mean())
    assert accuracy >= 0.8, f"the test network did not learn (held-out accuracy {accuracy:.2f})"

    work = tmp_path_factory.mktemp("bias")
    saved = quantize.export_saved_model(model, work / "saved")
    correction = x.astype(np.uint8)
    (work / "f.tflite").write_bytes(quantize.convert_float(saved))
    (work / "q.tflite").write_bytes(quantize.convert_int8(saved, correction))
    specs = [specs_from_model(work / name, ResizePolicy.CENTER_CROP)[0] for name in ("q.tflite", "f.tflite")]
    return ((work / "q.tflite").read_bytes(), (work / "f.tflite").read_bytes(), correction,
            held_x.astype(np.uint8), specs[0], specs[1])


def _held_out_shift(int8: bytes, float_model: bytes, images: np.ndarray, int8_spec, float_spec) -> float:
    """Mean |int8 - float| per-channel mean output over every paired layer, on ``images``."""
    from edgeclass.convert.bias_correction import _channel_means, _pair_up
    from edgeclass.convert.tflite_graph import parse_graph
    from edgeclass.device.pipeline.preprocess import Preprocessor

    pairs, _ = _pair_up(parse_graph(int8, "q"), parse_graph(float_model, "f"))
    ours = _channel_means(int8, [a.outputs[0] for a, _ in pairs], [Preprocessor(int8_spec)(i) for i in images])
    theirs = _channel_means(float_model, [b.outputs[0] for _, b in pairs], [Preprocessor(float_spec)(i) for i in images])
    return float(np.mean(np.concatenate([np.abs(ours[a.outputs[0]] - theirs[b.outputs[0]]) for a, b in pairs])))


def _buffers(model: bytes) -> list[bytes]:
    from edgeclass.convert.tflite_graph import schema

    root = schema().Model.GetRootAsModel(model, 0)
    return [root.Buffers(i).DataAsNumpy().tobytes() if root.Buffers(i).DataLength() else b""
            for i in range(root.BuffersLength())]


def test_every_layer_pairs_by_name_including_depthwise_and_relu6(converted):
    from edgeclass.convert.bias_correction import _pair_up
    from edgeclass.convert.tflite_graph import parse_graph

    int8, float_model, *_ = converted
    pairs, skipped = _pair_up(parse_graph(int8, "q"), parse_graph(float_model, "f"))
    assert skipped == []
    kinds = [(a.name, a.option("fusedActivationFunction")) for a, _ in pairs]
    assert ("DEPTHWISE_CONV_2D", 3) in kinds and ("CONV_2D", 3) in kinds and ("CONV_2D", 0) in kinds  # 3 = RELU6
    assert len(pairs) == 7  # 5 convolutions, 2 depthwise... the 7 layers with a bias, Dense included


def test_correction_removes_the_shift_on_images_it_never_saw_and_touches_only_biases(converted):
    from edgeclass.convert.bias_correction import correct_biases
    from edgeclass.convert.tflite_graph import schema

    int8, float_model, correction, held_out, int8_spec, float_spec = converted
    corrected, report = correct_biases(int8, float_model, correction, int8_spec, float_spec)
    assert report is not None and report.layers == 7 and report.images == len(correction) and report.skipped == ()
    before = _held_out_shift(int8, float_model, held_out, int8_spec, float_spec)
    after = _held_out_shift(corrected, float_model, held_out, int8_spec, float_spec)
    print(f"mean per-channel shift on {len(held_out)} held-out images: {before:.5f} -> {after:.5f}")
    assert before > 0, "int8 rounding left no measurable shift: the test network is too easy"
    assert after < 0.7 * before

    # Same size, and every changed buffer is an int32 bias vector.
    assert len(corrected) == len(int8)
    root = schema().Model.GetRootAsModel(int8, 0)
    graph = root.Subgraphs(0)
    bias_buffers = {graph.Tensors(i).Buffer() for i in range(graph.TensorsLength())
                    if graph.Tensors(i).Type() == schema().TensorType.INT32}
    changed = [i for i, (a, b) in enumerate(zip(_buffers(int8), _buffers(corrected))) if a != b]
    assert changed and set(changed) <= bias_buffers


def _logits(model: bytes, images: np.ndarray, spec) -> np.ndarray:
    """The classifier's logits (the Dense layer's output, before softmax), dequantized, one row per image."""
    import warnings

    from edgeclass.convert.tflite_graph import parse_graph
    from edgeclass.device.pipeline.interpreter import find_backend
    from edgeclass.device.pipeline.preprocess import Preprocessor

    dense = [op for op in parse_graph(model, "m").ops if op.name == "FULLY_CONNECTED"][-1].outputs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = find_backend().interpreter_class(model_content=model, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    scale, zero = next(d["quantization"] for d in interpreter.get_tensor_details() if d["index"] == dense)
    rows = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], Preprocessor(spec)(image))
        interpreter.invoke()
        value = interpreter.get_tensor(dense).astype(np.float64)[0]
        rows.append((value - zero) * scale if scale else value)
    return np.stack(rows)


def test_corrected_logits_track_the_float_model_more_closely_on_held_out_images(converted):
    """The softmax of this small task saturates, so the comparison is on the logits that feed it."""
    from edgeclass.convert.bias_correction import correct_biases

    int8, float_model, correction, held_out, int8_spec, float_spec = converted
    corrected, _ = correct_biases(int8, float_model, correction, int8_spec, float_spec)
    reference = _logits(float_model, held_out, float_spec)
    before = np.abs(_logits(int8, held_out, int8_spec) - reference).mean()
    after = np.abs(_logits(corrected, held_out, int8_spec) - reference).mean()
    print(f"mean |logit error| vs float on {len(held_out)} held-out images: {before:.4f} -> {after:.4f} "
          f"(logits span {reference.min():.1f}..{reference.max():.1f})")
    assert after < before


def _repacked(model: bytes, edit) -> bytes:
    """``model`` with ``edit(ModelT)`` applied, written back as a TFLite flatbuffer."""
    import flatbuffers

    from edgeclass.convert.tflite_graph import schema

    tree = schema().ModelT.InitFromPackedBuf(bytearray(model), 0)
    edit(tree)
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _layer_ops(tree, name: str) -> list:
    from edgeclass.convert.tflite_graph import schema

    codes = vars(schema().BuiltinOperator)
    ops = tree.subgraphs[0].operators
    return [op for op in ops if max(tree.operatorCodes[op.opcodeIndex].builtinCode,
                                    tree.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == codes[name]]


def test_a_layer_whose_fused_activation_differs_is_left_alone(converted):
    from edgeclass.convert.bias_correction import correct_biases

    int8, float_model, correction, _, int8_spec, float_spec = converted

    def drop_relu6(tree):
        _layer_ops(tree, "DEPTHWISE_CONV_2D")[0].builtinOptions.fusedActivationFunction = 0

    other = _repacked(float_model, drop_relu6)
    corrected, report = correct_biases(int8, other, correction[:8], int8_spec, float_spec, sweeps=1)
    assert report.layers == 6 and len(report.skipped) == 1
    assert "fused activation 3 in int8, 0 in float" in report.skipped[0]


def test_a_bias_buffer_shared_by_two_operators_is_not_corrected(converted):
    from edgeclass.convert.bias_correction import correct_biases

    int8, float_model, correction, _, int8_spec, float_spec = converted
    shared = {}

    def share(tree):
        # Two 1x1 convolutions with the same number of channels read one bias buffer, as the
        # converter does for equal constants.
        tensors = tree.subgraphs[0].tensors
        convs = [op for op in _layer_ops(tree, "CONV_2D") if len(tensors[op.inputs[2]].shape) == 1
                 and tensors[op.inputs[2]].shape[0] == 16]
        first, second = convs[:2]
        tensors[second.inputs[2]].buffer = tensors[first.inputs[2]].buffer
        shared["buffer"] = tensors[first.inputs[2]].buffer

    edited = _repacked(int8, share)
    corrected, report = correct_biases(edited, float_model, correction[:8], int8_spec, float_spec, sweeps=1)
    assert report.layers == 5 and sum("bias buffer is shared" in s for s in report.skipped) == 2
    assert _buffers(corrected)[shared["buffer"]] == _buffers(edited)[shared["buffer"]]


def test_models_that_do_not_pair_up_are_left_alone(converted):
    from edgeclass.convert.bias_correction import correct_biases

    from ..device.tinymodel import build_colour_classifier

    int8, _, correction, _, int8_spec, _ = converted
    other = build_colour_classifier(size=int8_spec.height)  # another network: no tensor names in common
    float_spec = InputSpec(height=int8_spec.height, width=int8_spec.width, dtype="uint8")
    result, report = correct_biases(int8, other, correction[:4], int8_spec, float_spec)
    assert result == int8 and report is None


def test_manifest_records_the_correction_and_it_can_be_turned_off(tiny_bundle, tiny_run, tmp_path):
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir

    on = load_bundle(tiny_bundle[0]).manifest["provenance"]["conversion"]["bias_correction"]
    assert on["layers"] == 3 and on["images"] == 30 and on["skipped"] == []  # tiny_bundle calibrates on 30 images
    convert_training_dir(tiny_run, tmp_path / "plain", ConvertOptions(calibration_size=30, bias_correction=False))
    plain = load_bundle(tmp_path / "plain")
    assert plain.manifest["provenance"]["conversion"]["bias_correction"] is None
    assert plain.model_path.read_bytes() != load_bundle(tiny_bundle[0]).model_path.read_bytes()

"""Benchmark: where an int8 MobileNetV2 loses accuracy, layer by layer, on the validation split.

For a training directory, converts the model as ``edgeclass convert`` does
(200 stratified calibration images from the train split, bias correction on
the first 100 of them) and prints, on validation images (never used for the
calibration or the correction):

- accuracy and top-1 agreement with float of int8 without and with bias
  correction, and each changed answer's float top-2 margin (how close the
  float model itself was to answering otherwise);
- per layer (conv, depthwise, fully connected): the signal-to-quantization-
  noise ratio of the int8 output against the float layer's, in dB
  (accumulated through every earlier layer, as the device computes it);
- per activation tensor (conv and add outputs): its one per-tensor int8 range,
  how many of the 256 levels a typical (median) channel uses, and how much
  wider the calibration images made the range than the validation images need.

    python benchmarks/int8_layers.py RUN [--images 60] [--json OUT.json]

Needs the images the run was trained on (split.json's data_dir).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tensors(model: bytes, indices: list[int], images: np.ndarray, spec) -> dict[int, np.ndarray]:
    """Every listed tensor, dequantized, for every image: (N, ...) per tensor."""
    from edgeclass.device.pipeline.interpreter import find_backend
    from edgeclass.device.pipeline.preprocess import Preprocessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = find_backend().interpreter_class(model_content=model, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    quant = {d["index"]: d["quantization"] for d in interpreter.get_tensor_details()}
    prep, out = Preprocessor(spec), {t: [] for t in indices}
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], prep(image))
        interpreter.invoke()
        for t in indices:
            value = interpreter.get_tensor(t).astype(np.float64)
            scale, zero = quant[t]
            out[t].append((value - zero) * scale if scale else value)
    return {t: np.stack(v) for t, v in out.items()}


def _short(name: str) -> str:
    """A layer's Keras name from the converter's fused tensor name."""
    first = name.split(";")[0].split("/")
    return first[-2] if len(first) > 1 and first[-1] in ("Relu6", "add_1", "BiasAdd", "MatMul") else first[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=int, default=60, help="validation images for the per-layer figures")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()

    from edgeclass.convert import quantize
    from edgeclass.convert.bias_correction import DEFAULT_IMAGES, _pair_up, correct_biases
    from edgeclass.convert.compare import predict_tflite
    from edgeclass.convert.pipeline import specs_from_model
    from edgeclass.convert.samples import load_resized, stratified_sample
    from edgeclass.convert.tflite_graph import parse_graph
    from edgeclass.device.bundle import ResizePolicy
    from edgeclass.device.pipeline.interpreter import find_backend
    from edgeclass.train.rundir import load_training_dir

    td = load_training_dir(args.run)
    if not td.split_items("val")[0][0].is_file():
        sys.exit(f"benchmark needs the images the run was trained on; {td.split_items('val')[0][0]} not found")
    size, policy = td.input_size, ResizePolicy(td.config["resize"])
    model = quantize.load_model(td.model_path)
    work = Path(tempfile.mkdtemp(prefix="edgeclass-int8-layers-"))
    saved = quantize.export_saved_model(model, work / "saved")
    float_bytes = quantize.convert_float(saved)
    chosen = stratified_sample(td.split_items("train"), 200, td.labels, 0)
    calibration = load_resized([p for p, _ in chosen], size, size, policy)
    plain = quantize.convert_int8(saved, calibration)
    (work / "float.tflite").write_bytes(float_bytes)
    (work / "int8.tflite").write_bytes(plain)
    float_spec = specs_from_model(work / "float.tflite", policy)
    int8_spec = specs_from_model(work / "int8.tflite", policy)
    corrected, report = correct_biases(plain, float_bytes, calibration[:DEFAULT_IMAGES], int8_spec[0], float_spec[0])
    (work / "int8_bc.tflite").write_bytes(corrected)

    items = td.split_items("val")
    val = load_resized([p for p, _ in items], size, size, policy)
    y = np.array([label for _, label in items])
    keras_scores = quantize.predict_keras(model, val)
    top = np.sort(keras_scores, 1)
    margin = top[:, -1] - top[:, -2]
    result = {"run": str(args.run), "val_images": len(y), "float_accuracy": float((keras_scores.argmax(1) == y).mean()),
              "float_margin_below_0.1": int((margin < 0.1).sum()), "models": {}, "layers": [], "ranges": []}
    print(f"{args.run}: {len(y)} validation images, float Keras accuracy {result['float_accuracy']:.2%}, "
          f"{result['float_margin_below_0.1']} with a float top-2 margin below 0.1")
    for name in ("int8", "int8_bc"):
        scores = predict_tflite(work / f"{name}.tflite", int8_spec[0], int8_spec[1], val)
        flips = scores.argmax(1) != keras_scores.argmax(1)
        row = {"accuracy": float((scores.argmax(1) == y).mean()), "agreement": float(1 - flips.mean()),
               "changed": int(flips.sum()),
               "right_to_wrong": int((flips & (keras_scores.argmax(1) == y)).sum()),
               "wrong_to_right": int((flips & (scores.argmax(1) == y)).sum()),
               "float_margins_of_changed": sorted(round(float(m), 3) for m in margin[flips])}
        result["models"][name] = row
        label = "int8, bias-corrected" if name == "int8_bc" else "int8, as converted"
        print(f"  {label:22s} accuracy {row['accuracy']:.2%}, agreement {row['agreement']:.2%}: {row['changed']} answers "
              f"changed ({row['right_to_wrong']} right->wrong, {row['wrong_to_right']} wrong->right), "
              f"float margins {row['float_margins_of_changed']}")

    q_graph, f_graph = parse_graph(plain, "int8"), parse_graph(float_bytes, "float")
    pairs, _ = _pair_up(q_graph, f_graph)
    sample = val[: args.images]
    reference = _tensors(float_bytes, [b.outputs[0] for _, b in pairs], sample, float_spec[0])
    measured = {name: _tensors(data, [a.outputs[0] for a, _ in pairs], sample, int8_spec[0])
                for name, data in (("int8", plain), ("int8_bc", corrected))}
    print(f"\nper layer, on {len(sample)} validation images: SQNR in dB (int8 as converted / bias-corrected)")
    for a, b in pairs:
        f = reference[b.outputs[0]]
        row = {"layer": _short(q_graph.tensors[a.outputs[0]].name), "op": a.name}
        for name in ("int8", "int8_bc"):
            err = measured[name][a.outputs[0]] - f
            row[f"sqnr_db_{name}"] = round(float(10 * np.log10(f.var() / max(float(np.mean(err ** 2)), 1e-20))), 2)
        result["layers"].append(row)
        print(f"  {row['op']:18s} {row['layer'][:40]:40s} {row['sqnr_db_int8']:6.1f} {row['sqnr_db_int8_bc']:6.1f}")

    names = {t.name: t.index for t in f_graph.tensors}
    acts = [(op, names.get(q_graph.tensors[op.outputs[0]].name)) for op in q_graph.ops
            if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD")]
    acts = [(op, t) for op, t in acts if t is not None]
    on_val = _tensors(float_bytes, [t for _, t in acts], sample, float_spec[0])
    # As many calibration images as validation ones: the extremes of a sample grow with its size.
    on_cal = _tensors(float_bytes, [t for _, t in acts], calibration[: len(sample)], float_spec[0])
    interpreter = find_backend().interpreter_class(model_content=corrected)
    quant = {d["index"]: d["quantization"] for d in interpreter.get_tensor_details()}
    print("\nper activation tensor: int8 range, levels a median channel uses (p99.9 of |value| / scale), "
          "calibration span / validation span")
    for op, t in acts:
        scale, zero = quant[op.outputs[0]]
        values = on_val[t].reshape(-1, on_val[t].shape[-1])
        median_channel = float(np.median(np.percentile(np.abs(values), 99.9, axis=0)))
        span = lambda v: float(v.max() - v.min()) or 1.0  # noqa: E731
        row = {"tensor": _short(q_graph.tensors[op.outputs[0]].name), "op": op.name,
               "range": [round((-128 - zero) * scale, 3), round((127 - zero) * scale, 3)],
               "median_channel_levels": round(median_channel / scale, 1),
               "calibration_over_validation_span": round(span(on_cal[t]) / span(on_val[t]), 2)}
        result["ranges"].append(row)
        print(f"  {row['op']:18s} {row['tensor'][:40]:40s} {row['range'][0]:7.2f}..{row['range'][1]:6.2f} "
              f"{row['median_channel_levels']:7.1f} {row['calibration_over_validation_span']:6.2f}")
    if report is not None:
        result["bias_correction"] = report.to_json()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Benchmark: ``edgeclass convert`` on models trained on the shared flowers set.

For each training directory given (made with ``edgeclass train`` or
``benchmarks/train_flowers.py`` on ``../shared/data/flowers``) prints: the
gate's figures on the validation split (drop and agreement; the benchmark
reports them and does not enforce them), float Keras and int8 test accuracy
and the drop in percentage points, agreement, model sizes (int8 target <= 30% of float TFLite),
conversion wall time, int8 vs float TFLite invoke latency on this machine
(LiteRT, 1 thread, median), and the Edge TPU pre-flight verdict (target: every
op on the TPU for MobileNetV2).

    python benchmarks/convert_flowers.py /tmp/bench-flowers-0.35 /tmp/bench-flowers-1.0
    python benchmarks/convert_flowers.py RUN --normalization both   # also measure normalisation on the device

Fails with a clear message when a training directory or the flowers data it
points at is missing.

Prints the int8 file's size breakdown too (weights, biases, quantization
parameters, names). ``--bias-correction both`` converts each run with and
without the bias correction, to measure what it buys.

Measured on the development machine (x86-64, 2 cores), default options (uint8
I/O, per-channel, 200 calibration images, normalisation in the model), seven
runs of benchmarks/train_flowers.py (0.35: seeds 42, 7, 1 and an earlier seed
42 run; 1.0: seeds 42, 7 and an earlier seed 42 run), 180 test images:

    drop pp (float Keras - int8)   bias correction on: 0.00 0.56 0.56 0.56 | 0.00 0.00 0.56   mean 0.32
                                                  off: 0.56 0.00 2.22 1.67 | 0.00 0.00 0.56   mean 0.71
    top-1 agreement with float                     on: 98.9 98.3 99.4 97.8 | 98.9 100  99.4   mean 99.0
                                                  off: 96.7 98.9 96.7 96.1 | 97.2 98.3 97.8   mean 97.4

    alpha  float TFLite  int8      conversion (on / off)  invoke float / int8  pre-flight
    0.35   1600 KiB      632 KiB   40-41 s / 15 s         1.4-1.5 / 2.1-2.2 ms  69 of 69 ops on the Edge TPU
    1.0    8700 KiB     2671 KiB   68-72 s / 25 s         5.3-6.0 / 3.5-3.8 ms  69 of 69 ops on the Edge TPU

int8 is 39.5% (0.35) and 30.7% (1.0) of the float TFLite size (28.6% / 28.3%
of model.keras): the int8 weights alone are 23.7% / 24.7%, and per-channel
quantization stores a float32 scale and an int64 zero point per output channel
of every weight and bias tensor (10.4% / 4.6%).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def invoke_latency_ms(model: Path, input_spec, output_spec, frame, runs: int, threads: int) -> float:
    """Median wall time of one ``invoke`` through the device's Classifier."""
    from edgeclass.device.pipeline.classifier import Classifier
    from edgeclass.device.pipeline.preprocess import Preprocessor

    classifier = Classifier(model, input_spec, output_spec, num_threads=threads)
    tensor = Preprocessor(input_spec)(frame)
    for _ in range(5):  # warm-up: XNNPACK packs weights on the first invokes
        classifier.invoke(tensor)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.invoke(tensor)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def float_tflite(run: Path, work: Path) -> Path:
    """The float32 TFLite model of a run (the latency baseline), converted like the converter does."""
    from edgeclass.convert.quantize import convert_float, export_saved_model, load_model

    model = load_model(run / "model.keras")
    path = work / "float.tflite"
    path.write_bytes(convert_float(export_saved_model(model, work / "saved")))
    return path


def size_breakdown(model: Path) -> dict:
    """Bytes of an int8 .tflite by kind: int8 weights, int32 biases, quantization parameters, tensor names."""
    from edgeclass.convert.tflite_graph import schema as tflite_schema

    schema = tflite_schema()
    root = schema.ModelT.InitFromPackedBuf(model.read_bytes(), 0)
    graph = root.subgraphs[0]
    parts = {"int8_weights": 0, "int32_biases": 0, "quantization_params": 0, "tensor_names": 0}
    for tensor in graph.tensors:
        data = root.buffers[tensor.buffer].data
        if data is not None and tensor.type == schema.TensorType.INT8:
            parts["int8_weights"] += len(data)
        elif data is not None and tensor.type == schema.TensorType.INT32:
            parts["int32_biases"] += len(data)
        q = tensor.quantization
        if q is not None and q.scale is not None:
            # The schema stores a float32 scale and an int64 zero point per channel.
            parts["quantization_params"] += 4 * len(q.scale) + 8 * len(q.zeroPoint)
        parts["tensor_names"] += len(tensor.name or b"")
    parts["other"] = model.stat().st_size - sum(parts.values())
    return parts


def bench_one(run: Path, out: Path, normalization: str, bias_correction: bool, runs: int, threads: int) -> dict:
    from edgeclass.convert.pipeline import ConvertOptions, convert_training_dir, specs_from_model
    from edgeclass.train.progress import progress_bar
    from edgeclass.device.bundle import load_bundle
    from edgeclass.device.pipeline.images import load_image
    from edgeclass.train.rundir import load_training_dir

    td = load_training_dir(run)
    first_test = td.split_items("test")[0][0]
    if not first_test.is_file():
        sys.exit(f"benchmark needs the flowers images the run was trained on; {first_test} not found")
    start = time.perf_counter()
    # max_drop 100: the benchmark reports the drop, it does not enforce it.
    options = ConvertOptions(normalization=normalization, bias_correction=bias_correction, max_drop=100.0,
                             min_agreement=0.0, force=True)
    result = convert_training_dir(run, out, options, progress=progress_bar)
    wall = time.perf_counter() - start
    bundle = load_bundle(out)
    frame = load_image(first_test)
    with tempfile.TemporaryDirectory() as work:
        fpath = float_tflite(run, Path(work))
        fspecs = specs_from_model(fpath, bundle.input.resize)
        float_ms = invoke_latency_ms(fpath, *fspecs, frame, runs, threads)
    int8_ms = invoke_latency_ms(bundle.model_path, bundle.input, bundle.output, frame, runs, threads)
    m, sizes = result.metrics, result.sizes
    return {
        "run": str(run),
        "backbone": td.config.get("backbone"),
        "alpha": td.config.get("alpha"),
        "input_size": td.input_size,
        "normalization": normalization,
        "bias_correction": bias_correction,
        "val_images": m["gate"]["images"],
        "val_float_accuracy": m["gate"]["float_accuracy"],
        "val_int8_accuracy": m["gate"]["int8_accuracy"],
        "val_drop_pp": m["gate"]["drop_pp"],
        "val_agreement": m["gate"]["agreement"],
        "test_images": m["test_images"],
        "float_accuracy": m["float_accuracy"],
        "float_tflite_accuracy": m["float_tflite_accuracy"],
        "int8_accuracy": m["int8_accuracy"],
        "drop_pp": m["drop_pp"],
        "agreement": m["agreement"],
        "keras_bytes": sizes["keras_bytes"],
        "float_tflite_bytes": sizes["float_tflite_bytes"],
        "int8_tflite_bytes": sizes["int8_tflite_bytes"],
        "int8_vs_float_size": round(sizes["int8_tflite_bytes"] / sizes["float_tflite_bytes"], 3),
        "int8_vs_keras_size": round(sizes["int8_tflite_bytes"] / sizes["keras_bytes"], 3),
        "int8_size_breakdown": size_breakdown(bundle.model_path),
        "conversion_seconds": m["conversion_seconds"],
        "convert_command_wall_seconds": round(wall, 1),
        "float_tflite_invoke_ms": round(float_ms, 2),
        "int8_invoke_ms": round(int8_ms, 2),
        "threads": threads,
        "input_quantization": [bundle.input.scale, bundle.input.zero_point],
        "preflight": result.preflight.summary(),
        "bundle": str(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training directories trained on flowers")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "edgeclass-bench-bundles")
    parser.add_argument("--normalization", choices=("model", "device", "both"), default="model")
    parser.add_argument("--bias-correction", choices=("on", "off", "both"), default="on")
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for run in args.runs:
        if not (run / "model.keras").is_file():
            sys.exit(f"benchmark needs a finished training directory; {run / 'model.keras'} not found "
                     "(make one with: python benchmarks/train_flowers.py --alpha 0.35 --out RUN)")
    where = ("model", "device") if args.normalization == "both" else (args.normalization,)
    corrections = {"on": (True,), "off": (False,), "both": (False, True)}[args.bias_correction]
    rows = []
    for run in args.runs:
        for norm in where:
            for corrected in corrections:
                out = args.out / f"{run.name}-{norm}-{'bc' if corrected else 'nobc'}"
                row = bench_one(run, out, norm, corrected, args.latency_runs, args.threads)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(f"{'run':<28} {'norm':<6} {'bias':<4} {'val drop':>8} {'val agree':>9} {'float':>7} {'int8':>7} {'drop pp':>8} {'agree':>7} "
          f"{'float KiB':>9} {'int8 KiB':>8} {'ratio':>6} {'conv s':>7} {'f32 ms':>7} {'int8 ms':>7}  pre-flight")
    for r in rows:
        print(f"{Path(r['run']).name:<28} {r['normalization']:<6} {'on' if r['bias_correction'] else 'off':<4} "
              f"{r['val_drop_pp']:>+8.2f} {r['val_agreement']:>9.2%} {r['float_accuracy']:>7.2%} {r['int8_accuracy']:>7.2%} "
              f"{r['drop_pp']:>+8.2f} {r['agreement']:>7.2%} {r['float_tflite_bytes'] / 1024:>9.0f} "
              f"{r['int8_tflite_bytes'] / 1024:>8.0f} {r['int8_vs_float_size']:>6.0%} {r['conversion_seconds']:>7.1f} "
              f"{r['float_tflite_invoke_ms']:>7.2f} {r['int8_invoke_ms']:>7.2f}  {r['preflight'].split(': ', 1)[1]}")


if __name__ == "__main__":
    main()

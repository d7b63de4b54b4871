"""Where x86-64 and arm64 part ways inside an int8 model: every intermediate tensor, compared.

The interpreter's XNNPACK delegate runs a whole model as one fused node, so
its intermediate tensors are normally out of sight (and
``experimental_preserve_all_tensors`` only keeps the built-in kernels'). This
rewrites the model so that *every* activation tensor is also a graph output:
XNNPACK must then write each one out, and we see what the production kernels
computed, layer by layer. ``--no-xnnpack`` runs the same with the built-in
(reference/optimized, non-delegated) kernels instead.

Two steps, one on each machine (only edgeclass[device] needed, so the dump
runs inside the emulated arm64 root too):

    python benchmarks/int8_arch_layers.py dump BUNDLE IMAGE... -o x86.npz [--no-xnnpack]
    python benchmarks/int8_arch_layers.py compare x86.npz arm64.npz

``compare`` prints, per image, every operator in graph order with its output's
largest difference in quantized steps and the share of values that differ,
and names the first operator whose output differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def all_outputs_model(content: bytes) -> tuple[bytes, list[dict]]:
    """The model with every operator's output also a graph output, and the operators in order."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    graph = model.subgraphs[0]
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops, outputs = [], list(graph.outputs)
    for n, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        for t in op.outputs:
            if t not in outputs:
                outputs.append(t)
        name = graph.tensors[op.outputs[0]].name
        ops.append({"index": n, "op": codes.get(builtin, str(builtin)), "version": code.version,
                    "output": name.decode() if isinstance(name, bytes) else name})
    graph.outputs = outputs
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), ops


def dump(bundle_dir: Path, images: list[Path], out: Path, xnnpack: bool) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeclass.device.bundle import load_bundle
    from edgeclass.device.pipeline.images import load_image
    from edgeclass.device.pipeline.machine import describe_machine
    from edgeclass.device.pipeline.preprocess import Preprocessor

    bundle = load_bundle(bundle_dir)
    content, ops = all_outputs_model(bundle.model_path.read_bytes())
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=content, num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    preprocess = Preprocessor(bundle.input)
    by_name = {d["name"]: d for d in interpreter.get_output_details()}
    arrays = {}
    for k, path in enumerate(images):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], preprocess(load_image(path)))
        interpreter.invoke()
        for op in ops:
            arrays[f"{k}/{op['output']}"] = interpreter.get_tensor(by_name[op["output"]]["index"]).copy()
    meta = {"images": [str(p) for p in images], "ops": ops, "xnnpack": xnnpack, "machine": describe_machine(),
            "quantization": {op["output"]: [float(by_name[op["output"]]["quantization"][0]),
                                            int(by_name[op["output"]]["quantization"][1])] for op in ops}}
    np.savez_compressed(out, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    print(f"{len(ops)} operators x {len(images)} images -> {out}")


def _load(path: Path):
    data = np.load(path)
    return json.loads(bytes(data["__meta__"]).decode()), data


def compare(a_path: Path, b_path: Path, as_json: bool) -> None:
    meta_a, a = _load(a_path)
    meta_b, b = _load(b_path)
    if [o["output"] for o in meta_a["ops"]] != [o["output"] for o in meta_b["ops"]]:
        raise SystemExit("the two dumps are of different models")
    report = {"a": meta_a["machine"], "b": meta_b["machine"], "xnnpack": [meta_a["xnnpack"], meta_b["xnnpack"]], "images": []}
    for k, image in enumerate(meta_a["images"]):
        rows, first = [], None
        for op in meta_a["ops"]:
            x = a[f"{k}/{op['output']}"].astype(np.int64)
            y = b[f"{k}/{op['output']}"].astype(np.int64)
            diff = np.abs(x - y)
            row = {"index": op["index"], "op": op["op"], "output": op["output"], "max_steps": int(diff.max()),
                   "share_differing": round(float(np.mean(diff > 0)), 5), "values": int(diff.size)}
            if first is None and row["max_steps"] > 0:
                first = row
            rows.append(row)
        report["images"].append({"image": image, "first_difference": first, "ops": rows})
    if as_json:
        print(json.dumps(report, indent=1))
        return
    print(f"a: {meta_a['machine']['machine']} {meta_a['machine']['cpu']} (xnnpack {meta_a['xnnpack']})")
    print(f"b: {meta_b['machine']['machine']} {meta_b['machine']['cpu']} (xnnpack {meta_b['xnnpack']})")
    for item in report["images"]:
        print(f"\n{item['image']}: first difference at "
              + (f"operator {item['first_difference']['index']} {item['first_difference']['op']}" if item["first_difference"] else "none"))
        print(f"{'#':>4} {'op':<20} {'max steps':>9} {'differing':>10}  output")
        for row in item["ops"]:
            print(f"{row['index']:>4} {row['op']:<20} {row['max_steps']:>9} {row['share_differing']:>10.3%}  {row['output'][:60]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="run the model and save every operator's output")
    d.add_argument("bundle", type=Path)
    d.add_argument("images", type=Path, nargs="+")
    d.add_argument("-o", "--output", type=Path, required=True)
    d.add_argument("--no-xnnpack", action="store_true", help="built-in kernels instead of the XNNPACK delegate")
    c = sub.add_parser("compare", help="compare two dumps operator by operator")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "dump":
        dump(args.bundle, args.images, args.output, xnnpack=not args.no_xnnpack)
    else:
        compare(args.a, args.b, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()

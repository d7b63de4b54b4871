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

``compare`` prints, per image, whether the decoded photo and the input tensor
(after the device's resize) are identical, then every operator in graph order
with its output's largest difference in quantized steps and the share of
values that differ, and names the first operator whose output differs.

    python benchmarks/int8_arch_layers.py replay BUNDLE x86.npz arm64.npz

runs the model here on the *other* machine's input tensors and compares every
operator with that machine's dump: zero differences mean the two machines'
int8 kernels agree bit for bit, and any disagreement comes from the input.
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
        rgb = load_image(path)
        tensor = preprocess(rgb)
        arrays[f"{k}/__decoded__"], arrays[f"{k}/__input__"] = rgb, tensor
        for op, value in _run_all(interpreter, ops, by_name, tensor):
            arrays[f"{k}/{op['output']}"] = value
    meta = {"images": [str(p) for p in images], "ops": ops, "xnnpack": xnnpack, "machine": describe_machine(),
            "quantization": {op["output"]: [float(by_name[op["output"]]["quantization"][0]),
                                            int(by_name[op["output"]]["quantization"][1])] for op in ops}}
    np.savez_compressed(out, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    print(f"{len(ops)} operators x {len(images)} images -> {out}")


def _run_all(interpreter, ops: list[dict], by_name: dict, tensor: np.ndarray):
    """``(op, its output)`` for every operator, for one input tensor."""
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    return [(op, interpreter.get_tensor(by_name[op["output"]]["index"]).copy()) for op in ops]


def _differing(a, b) -> int:
    return int(np.sum(np.asarray(a).astype(np.int64) != np.asarray(b).astype(np.int64)))


def replay(bundle_dir: Path, a_path: Path, b_path: Path) -> None:
    """Run the model here on ``b``'s input tensors; compare every operator with ``b``'s outputs (and ``a``'s)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeclass.device.bundle import load_bundle
    from edgeclass.device.pipeline.machine import describe_machine

    meta_a, a = _load(a_path)
    meta_b, b = _load(b_path)
    content, ops = all_outputs_model(load_bundle(bundle_dir).model_path.read_bytes())
    if [o["output"] for o in ops] != [o["output"] for o in meta_b["ops"]]:
        raise SystemExit(f"{b_path} is a dump of another model than {bundle_dir}")
    interpreter = Interpreter(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    by_name = {d["name"]: d for d in interpreter.get_output_details()}
    here = describe_machine()
    print(f"here: {here['machine']} {here['cpu']}; inputs and reference: {meta_b['machine']['machine']} {meta_b['machine']['cpu']}")
    for k, image in enumerate(meta_b["images"]):
        outputs = _run_all(interpreter, ops, by_name, b[f"{k}/__input__"])
        replayed = [op for op, value in outputs if _differing(value, b[f"{k}/{op['output']}"])]
        print(f"\n{image}")
        print(f"  decoded photo: {_differing(a[f'{k}/__decoded__'], b[f'{k}/__decoded__'])} values differ between the dumps; "
              f"input tensor after resizing: {_differing(a[f'{k}/__input__'], b[f'{k}/__input__'])} of {b[f'{k}/__input__'].size}")
        last = ops[-1]["output"]
        print(f"  own input here: {_differing(a[f'{k}/{last}'], b[f'{k}/{last}'])} output values differ; "
              f"on the other machine's input: {len(replayed)} of {len(ops)} operators differ"
              + (f" (first: #{replayed[0]['index']} {replayed[0]['op']})" if replayed else " (bit-identical)"))


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
        inputs = {part: _differing(a[f"{k}/__{part}__"], b[f"{k}/__{part}__"]) for part in ("decoded", "input")
                  if f"{k}/__{part}__" in a and f"{k}/__{part}__" in b}
        for op in meta_a["ops"]:
            x = a[f"{k}/{op['output']}"].astype(np.int64)
            y = b[f"{k}/{op['output']}"].astype(np.int64)
            diff = np.abs(x - y)
            row = {"index": op["index"], "op": op["op"], "output": op["output"], "max_steps": int(diff.max()),
                   "share_differing": round(float(np.mean(diff > 0)), 5), "values": int(diff.size)}
            if first is None and row["max_steps"] > 0:
                first = row
            rows.append(row)
        report["images"].append({"image": image, "differing_inputs": inputs, "first_difference": first, "ops": rows})
    if as_json:
        print(json.dumps(report, indent=1))
        return
    print(f"a: {meta_a['machine']['machine']} {meta_a['machine']['cpu']} (xnnpack {meta_a['xnnpack']})")
    print(f"b: {meta_b['machine']['machine']} {meta_b['machine']['cpu']} (xnnpack {meta_b['xnnpack']})")
    for item in report["images"]:
        print(f"\n{item['image']}: first difference at "
              + (f"operator {item['first_difference']['index']} {item['first_difference']['op']}" if item["first_difference"] else "none"))
        if item["differing_inputs"]:
            print("values that differ before the model: "
                  + ", ".join(f"{part} {count}" for part, count in item["differing_inputs"].items()))
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
    r = sub.add_parser("replay", help="run the model here on another machine's input tensors, compare every operator")
    r.add_argument("bundle", type=Path)
    r.add_argument("a", type=Path, help="this machine's dump")
    r.add_argument("b", type=Path, help="the other machine's dump")
    args = parser.parse_args(argv)
    if args.command == "dump":
        dump(args.bundle, args.images, args.output, xnnpack=not args.no_xnnpack)
    elif args.command == "replay":
        replay(args.bundle, args.a, args.b)
    else:
        compare(args.a, args.b, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()

"""The bundle contract: creation, verification, and a one-line refusal for each mismatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeclass.device.bundle import OutputSpec, load_bundle, write_bundle
from edgeclass.device.pipeline.wrap import create_bundle_from_model
from edgeclass.device.pipeline.classifier import open_classifier
from edgeclass.device.errors import BundleError, ModelError
from edgeclass.device.bundle import InputSpec
from edgeclass.device.pipeline.preprocess import Preprocessor

from ..conftest import run_edgeclass
from .conftest import colour_frame


@pytest.fixture
def bundle_copy(colour_bundle, tmp_path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(colour_bundle, dst)
    return dst


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "bundle.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_created_bundle_records_the_model_tensors(colour_bundle):
    b = load_bundle(colour_bundle)
    assert b.labels == ("red", "green", "blue")
    assert (b.input.height, b.input.width, b.input.dtype) == (32, 32, "uint8")
    assert (b.input.scale, b.input.zero_point) == (1.0, 0)
    assert (b.output.size, b.output.dtype, b.output.scale) == (3, "uint8", 1 / 256)
    manifest = b.manifest
    assert manifest["schema_version"] == 1
    assert set(manifest["files"]) == {"model.tflite", "labels.txt"}
    assert all(len(h) == 64 for h in manifest["files"].values())


def test_classifier_really_runs_the_bundle(colour_bundle):
    b = load_bundle(colour_bundle)
    classifier = open_classifier(b, num_threads=1)
    pre = Preprocessor(b.input)
    for index, name in enumerate(b.labels):
        scores = classifier.scores(pre(colour_frame(name)))
        assert scores.shape == (3,)
        assert int(np.argmax(scores)) == index
        assert scores[index] > 0.9


def test_hash_mismatch_names_the_file(bundle_copy):
    (bundle_copy / "labels.txt").write_text("red\ngreen\nteal\n")
    with pytest.raises(BundleError, match=r"labels\.txt: sha256 is .* bundle\.json expects"):
        load_bundle(bundle_copy)


def test_labels_count_mismatch(bundle_copy):
    (bundle_copy / "labels.txt").write_text("red\ngreen\nblue\nyellow\n")
    _edit_manifest(bundle_copy, lambda m: (m["files"].__setitem__("labels.txt", _sha(bundle_copy / "labels.txt")), m.pop("labels")))
    with pytest.raises(BundleError, match=r"labels\.txt: has 4 labels but the model outputs 3 scores"):
        load_bundle(bundle_copy)


def _sha(path: Path) -> str:
    from edgeclass.device.bundle import sha256_file

    return sha256_file(path)


@pytest.mark.parametrize("version, message", [
    (2, r"schema_version 2 was written by a newer edgeclass.*upgrade edgeclass"),
    (0, r"schema_version 0 is not supported"),
    ("1", r"schema_version is '1', expected the integer 1"),
])
def test_unknown_schema_version_refused(bundle_copy, version, message):
    _edit_manifest(bundle_copy, lambda m: m.__setitem__("schema_version", version))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_missing_model_file(bundle_copy):
    (bundle_copy / "model.tflite").unlink()
    with pytest.raises(BundleError, match=r"model\.tflite: missing, but bundle\.json lists it"):
        load_bundle(bundle_copy)


def test_missing_and_broken_manifest(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_bundle(tmp_path / "nope")
    (bundle_copy / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"bundle\.json: not valid JSON"):
        load_bundle(bundle_copy)
    (bundle_copy / "bundle.json").unlink()
    with pytest.raises(BundleError, match=r"bundle\.json: missing; .* is not a bundle"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_model_is_a_clear_error(bundle_copy, damage):
    model = bundle_copy / "model.tflite"
    data = model.read_bytes()
    model.write_bytes({"garbage": b"this is not a flatbuffer" * 40, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    # With hashes skipped the damage reaches the interpreter, which must still not crash.
    b = load_bundle(bundle_copy, verify_hashes=False)
    with pytest.raises(ModelError, match=r"model\.tflite: not a usable TFLite model"):
        open_classifier(b)
    with pytest.raises(BundleError, match=r"model\.tflite: sha256 is"):
        load_bundle(bundle_copy)


def test_manifest_that_lies_about_the_input_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["input"].update(height=64, width=64))
    with pytest.raises(BundleError, match=r"model\.tflite: input shape is \[1, 32, 32, 3\] but bundle\.json says \[1, 64, 64, 3\]"):
        open_classifier(load_bundle(bundle_copy))
    _edit_manifest(bundle_copy, lambda m: m["input"].update(height=32, width=32, quantization={"scale": 0.5, "zero_point": 3}))
    with pytest.raises(BundleError, match=r"input quantization is \(scale 1, zero point 0\) but bundle\.json says \(scale 0\.5, zero point 3\)"):
        open_classifier(load_bundle(bundle_copy))


def test_write_bundle_refuses_existing_and_never_half_writes(colour_bundle, tmp_path):
    b = load_bundle(colour_bundle)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BundleError, match="already exists; .* --force"):
        write_bundle(out, model=b.model_path, labels=list(b.labels), input_spec=b.input, output_spec=b.output)
    # A failure mid-write (the model file vanished) leaves neither a bundle nor a temporary directory.
    with pytest.raises(FileNotFoundError):
        write_bundle(tmp_path / "new", model=tmp_path / "gone.tflite", labels=list(b.labels),
                     input_spec=b.input, output_spec=b.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # --force replaces only once the new bundle is complete.
    write_bundle(out, model=b.model_path, labels=list(b.labels), input_spec=b.input, output_spec=b.output, force=True)
    assert load_bundle(out).labels == b.labels
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_bundle_checks_labels_against_outputs(colour_bundle, tmp_path):
    b = load_bundle(colour_bundle)
    with pytest.raises(BundleError, match="2 labels given but the model outputs 3 scores"):
        write_bundle(tmp_path / "x", model=b.model_path, labels=["a", "b"], input_spec=b.input,
                     output_spec=OutputSpec(size=3))


def test_bundle_create_refuses_edgetpu_model_as_cpu_model(shared_data, tmp_path):
    coral = shared_data / "coral"
    with pytest.raises(ModelError, match="compiled for the Edge TPU; pass the CPU model as --model"):
        create_bundle_from_model(coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", coral / "imagenet_labels.txt", tmp_path / "b")


def test_bundle_cli_create_and_info(tmp_path):
    from .tinymodel import write_colour_classifier

    model, labels = write_colour_classifier(tmp_path)
    created = run_edgeclass("bundle", "create", "--model", model, "--labels", labels, "-o", tmp_path / "b", "--resize", "stretch")
    assert created.returncode == 0, created.stderr
    info = run_edgeclass("bundle", "info", tmp_path / "b", "--verify")
    assert info.returncode == 0, info.stderr
    assert "32x32 RGB uint8" in info.stdout
    assert "resize      stretch" in info.stdout
    assert "test inference ok" in info.stdout
    again = run_edgeclass("bundle", "create", "--model", model, "--labels", labels, "-o", tmp_path / "b")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = run_edgeclass("bundle", "create", "--model", model, "--labels", labels, "-o", tmp_path / "c", "--resize", "squash")
    assert bad.returncode == 2 and "--resize is 'squash', expected one of center_crop, stretch" in bad.stderr


def test_input_spec_rejects_unknown_resize(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["input"].update(resize="fisheye"))
    with pytest.raises(BundleError, match=r"input\.resize is 'fisheye', expected one of center_crop, stretch"):
        load_bundle(bundle_copy)


def test_input_spec_roundtrip():
    spec = InputSpec(height=96, width=128, dtype="int8", scale=0.5, zero_point=-3, mean=(1, 2, 3), std=(4, 5, 6),
                     normalization="device")
    assert InputSpec.from_json(spec.to_json()) == spec

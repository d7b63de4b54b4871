"""Training directory -> bundle: the steps of ``edgeclass convert`` in order.

1. read and check the training directory (no TensorFlow yet, so mistakes fail fast);
2. load model.keras, export a batch-1 SavedModel;
3. calibrate on a stratified sample of the train split and convert to int8
   (and to float32 TFLite, the reference and the size baseline), then correct
   the int8 biases against the float model on part of that sample;
4. evaluate float Keras, float TFLite and int8 TFLite on the validation and
   test splits through the device's own preprocessing and interpreter. The
   gate decides on validation only: refuse when int8 loses more than
   ``max_drop`` points there or agrees with float on fewer than
   ``min_agreement`` of its images. The test split is measured and reported,
   never used to decide (deciding on it would make it a second validation set);
5. Edge TPU pre-flight on the bundle model (always recorded, printed on request);
6. write the bundle atomically and load it back with the device loader;
7. with ``edgetpu``: compile, then replace the bundle atomically with one that
   holds model_edgetpu.tflite too. A missing compiler leaves the CPU bundle.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeclass.device.bundle import OutputSpec, load_bundle, write_bundle
from edgeclass.device.pipeline.calibration import MODES, TemperatureDecision, decide_temperature
from edgeclass.device.pipeline.classifier import EdgeTPU, open_classifier
from edgeclass.device.errors import BundleError, EdgeclassError
from edgeclass.device.pipeline.interpreter import make_interpreter
from edgeclass.device.pipeline.machine import describe_machine
from edgeclass.device.bundle import InputSpec, ResizePolicy
from edgeclass.device.pipeline.preprocess import Preprocessor
from edgeclass.train.rundir import DATASET, TrainingDir, TrainingDirError, load_training_dir

from . import edgetpu_compile
from .build import build_tflite
from .edgetpu_ops import Preflight, check_edgetpu
from .progress import Progress, no_progress
from .samples import SampleError, load_resized, stratified_sample

log = logging.getLogger(__name__)

NORMALIZATION_CHOICES = ("model", "device")


@dataclass(frozen=True)
class ConvertOptions:
    """Everything ``edgeclass convert`` can be asked to do differently."""

    io: str = "uint8"  # uint8 | int8 input/output tensors
    per_tensor: bool = False
    calibration_size: int = 200
    bias_correction: bool = True  # remove int8 rounding's per-channel shift (see bias_correction.py)
    float_model: bool = False  # ship a float32 TFLite model instead of int8
    max_drop: float = 1.0  # percentage points, on the validation split
    min_agreement: float = 0.97  # top-1 agreement with float Keras, on the validation split
    normalization: str = "model"  # where pixel normalisation happens: model | device
    edgetpu: bool = False  # compile for the Edge TPU
    edgetpu_compiler: Path | None = None
    force: bool = False
    seed: int = 0
    name: str | None = None
    threads: int | None = None  # interpreter threads during evaluation
    temperature: str = "auto"  # temperature scaling fitted on validation: auto | on | off (see pipeline.calibration)


@dataclass
class ConvertResult:
    """What a conversion produced and measured."""

    bundle: Path
    metrics: dict
    preflight: Preflight
    compile_report: edgetpu_compile.CompileReport | None = None
    seconds: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    comparison_text: str = ""
    calibration_text: str = ""


def check_inputs(training_dir: Path, out_dir: Path, options: ConvertOptions) -> TrainingDir:
    """Every check that needs no TensorFlow, so a typo fails in a second, not a minute."""
    if options.io not in ("uint8", "int8"):
        raise EdgeclassError(f"--io is {options.io!r}, expected uint8 or int8")
    if options.normalization not in NORMALIZATION_CHOICES:
        raise EdgeclassError(f"--normalization is {options.normalization!r}, expected model or device")
    if options.calibration_size < 1:
        raise EdgeclassError(f"--calibration-size is {options.calibration_size}, expected at least 1")
    td = load_training_dir(training_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and not options.force:
        raise BundleError(f"{out_dir}: already exists; choose another output directory or pass --force to replace it")
    if out_dir.resolve() == td.path.resolve() or td.path.resolve() in out_dir.resolve().parents:
        raise BundleError(f"{out_dir}: is inside the training directory {td.path}; write the bundle elsewhere")
    try:
        ResizePolicy(td.config["resize"])
    except ValueError:
        choices = ", ".join(p.value for p in ResizePolicy)
        raise TrainingDirError(f"{td.path / 'config.json'}: resize is {td.config['resize']!r}, expected one of {choices}") from None
    if options.temperature not in MODES:
        raise EdgeclassError(f"--temperature is {options.temperature!r}, expected one of {', '.join(MODES)}")
    if not 0.0 <= options.min_agreement <= 1.0:
        raise EdgeclassError(f"--min-agreement is {options.min_agreement:g}, expected a fraction between 0 and 1")
    for split, why in (("val", "the int8 gate decides on it"), ("test", "conversion reports accuracy on it")):
        if not td.split_items(split):
            raise SampleError(f"{td.path / 'split.json'}: the {split} split is empty; {why} (retrain to get one)")
    if not options.float_model:
        stratified_sample(td.split_items("train"), options.calibration_size, td.labels, options.seed,
                          where=str(td.path / "split.json"))
    return td


def convert_training_dir(training_dir: str | Path, out_dir: str | Path, options: ConvertOptions = ConvertOptions(),
                         progress: Progress = no_progress) -> ConvertResult:
    """Convert a training directory into a verified bundle at ``out_dir`` (see module docstring)."""
    out_dir = Path(out_dir)
    td = check_inputs(Path(training_dir), out_dir, options)
    from . import quantize  # TensorFlow from here on

    seconds: dict[str, float] = {}
    policy = ResizePolicy(td.config["resize"])
    model = quantize.load_model(td.model_path)
    height, width = quantize.check_model(model, td.model_path, td.input_size, len(td.labels))

    with tempfile.TemporaryDirectory(prefix="edgeclass-convert-") as work_name:
        work = Path(work_name)
        # Every model is measured on the same resized pixels of the validation and test splits.
        images = {split: load_resized([p for p, _ in td.split_items(split)], height, width, policy, progress, f"{split} images")
                  for split in ("val", "test")}
        y_true = {split: np.array([label for _, label in td.split_items(split)], np.int64) for split in ("val", "test")}
        keras_scores = {split: quantize.predict_keras(model, images[split], progress=progress) for split in ("val", "test")}
        calibration_images = None
        if not options.float_model:
            chosen = stratified_sample(td.split_items("train"), options.calibration_size, td.labels, options.seed,
                                       where=str(td.path / "split.json"))
            calibration_images = load_resized([p for p, _ in chosen], height, width, policy, progress, "calibration images")

        decision = _temperature_decision(td, keras_scores["val"], y_true["val"], options)
        uncalibrated, folded_into = {}, None
        if decision.temperature is not None:
            # The int8 model of the network as trained, built the same way, only to measure what scaling changed.
            raw = build_tflite(model, td.model_path, work / "uncalibrated", calibration_images, policy, options, progress, {})
            uncalibrated = {split: raw.candidate_scores(images[split], f"{raw.candidate} as trained ({split})", progress,
                                                        options.threads) for split in ("val", "test")}
            from edgeclass.train.calibrate import fold_temperature

            folded_into = fold_temperature(model, decision.temperature, np.asarray(images["val"][:8], np.float32))
            keras_before = keras_scores
            keras_scores = {split: quantize.predict_keras(model, images[split], progress=progress) for split in ("val", "test")}
        else:
            keras_before = None

        built = build_tflite(model, td.model_path, work / "bundle", calibration_images, policy, options, progress, seconds)
        del calibration_images
        candidate, bundle_model, specs, correction = built.candidate, built.candidate_path, built.candidate_specs, built.correction

        from .calibration import calibration_figures, compact
        from .compare import check_gate, compare
        from .report import comparison_table, write_report

        # The gate decides on the validation split; the test split is measured once, for the record.
        comparisons, all_scores = {}, {}
        for split in ("val", "test"):
            start = time.perf_counter()
            all_scores[split] = {"float": keras_scores[split], **built.scores(images[split], split, progress, options.threads)}
            comparisons[split] = compare(td.labels, y_true[split], all_scores[split], candidate=candidate, split=split)
            seconds[f"evaluate_{split}"] = time.perf_counter() - start
        gate = check_gate(comparisons["val"], options.max_drop, options.min_agreement,
                          hint="--float ships the float model; 'Troubleshooting' in the README lists what helps")
        text = comparison_table(comparisons["val"], "validation split (the gate)") + "\n" + \
            comparison_table(comparisons["test"], "test split (reported only; nothing is decided on it)")
        log.info("accuracy:\n%s", text.rstrip())
        comparison = comparisons["test"]
        calibration = calibration_figures(decision, y_true, all_scores, candidate, keras_before, uncalibrated, folded_into)
        log.info("%s", calibration["summary"])

        preflight = check_edgetpu(bundle_model)
        # Which machine measured these accuracies: another machine (a Pi's Arm cores) may round a few
        # values differently, so a figure is only exact for its machine; 'bundle evaluate' measures on the device.
        measured_on = describe_machine()
        sizes = {"keras_bytes": td.model_path.stat().st_size, "float_tflite_bytes": built.float_path.stat().st_size}
        if built.int8_path is not None:
            sizes["int8_tflite_bytes"] = built.int8_path.stat().st_size
        metrics = comparison.metrics()
        metrics["gate"] = gate
        metrics["calibration"] = compact(calibration)
        metrics["model_sizes"] = sizes
        metrics["measured_on"] = measured_on
        metrics["conversion_seconds"] = round(
            seconds["export"] + seconds.get("convert_int8", seconds["convert_float"]) + seconds.get("bias_correction", 0.0), 2)
        report_dir = write_report(work / "report", comparison, metrics, extra={"edgetpu_preflight": preflight.to_json()},
                                  validation=comparisons["val"], text=text, calibration=calibration)
        _write_pages(td, report_dir, out_dir)

        bundle_kwargs = dict(
            model=bundle_model,
            labels=list(td.labels),
            input_spec=specs[0],
            output_spec=specs[1],
            name=options.name or out_dir.name,
            report_dir=report_dir,
            provenance=provenance(td, options, quantize.tensorflow_version(), seconds, correction),
            metrics=metrics,
        )
        write_bundle(out_dir, edgetpu={"compiled": False, "preflight": preflight.to_json()},
                     force=options.force, **bundle_kwargs)
        validate_bundle(out_dir)
        log.info("bundle written to %s", out_dir)
        _update_run_page(td, out_dir)
        result = ConvertResult(out_dir, metrics, preflight, seconds=seconds, sizes=sizes, comparison_text=text,
                               calibration_text=calibration["summary"])

        if options.edgetpu:
            result.compile_report = compile_into_bundle(out_dir, preflight, bundle_kwargs, options, work)
    return result


def _temperature_decision(td: TrainingDir, val_scores: np.ndarray, val_y: np.ndarray,
                          options: ConvertOptions) -> TemperatureDecision:
    """Whether to fold a temperature into the bundle's model, decided on the float model's validation scores."""
    if options.temperature != "off" and td.config.get("refit"):
        # A model refitted on train+val has seen every validation image: its scores there say nothing about calibration.
        decision = decide_temperature(val_scores, val_y, "off")
        return TemperatureDecision(None, "the model was trained on the validation split (--refit): no held-out images "
                                   "to fit a temperature on", decision.val_ece, None, decision.p_value, decision.val_images)
    return decide_temperature(val_scores, val_y, options.temperature)


def _write_pages(td: TrainingDir, report_dir: Path, out_dir: Path) -> None:
    """The run's page with this bundle's side, into the bundle's report (before the bundle is hashed)."""
    from edgeclass.train.page import build_page

    build_page(td.report_dir, run_dir=td.path, bundle_report=report_dir, bundle_path=out_dir.resolve(),
               out=report_dir / "index.html")


def _update_run_page(td: TrainingDir, out_dir: Path) -> None:
    """Refresh the training directory's own page with the bundle just made (the int8 side); a training
    directory without a report, or one this user cannot write, keeps its page as it was."""
    from edgeclass.train.page import build_page

    if not (td.report_dir / "metrics.json").is_file():
        log.info("%s has no training report: the bundle's report/index.html is the page for this bundle", td.path)
        return
    try:
        build_page(td.report_dir, run_dir=td.path, bundle_report=out_dir / "report", bundle_path=out_dir.resolve())
    except OSError as exc:
        log.warning("could not update %s (%s); the bundle's report/index.html has the same page",
                    td.report_dir / "index.html", exc.strerror or exc)


def specs_from_model(model_path: Path, policy: ResizePolicy, normalization=None) -> tuple[InputSpec, OutputSpec]:
    """The manifest's input and output sections, read from the converted model's own tensors."""
    interpreter = make_interpreter(model_path, num_threads=1)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_dtype, out_dtype = np.dtype(inp["dtype"]).name, np.dtype(out["dtype"]).name
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    shape = [int(d) for d in inp["shape"]]
    input_spec = InputSpec(
        height=shape[1],
        width=shape[2],
        dtype=in_dtype,
        scale=float(in_scale) if in_dtype != "float32" else 1.0,
        zero_point=int(in_zero) if in_dtype != "float32" else 0,
        resize=policy,
        mean=normalization.mean if normalization else (0.0, 0.0, 0.0),
        std=normalization.std if normalization else (1.0, 1.0, 1.0),
        normalization="device" if normalization else "model",
    )
    output_spec = OutputSpec(
        size=int(np.prod(out["shape"])),
        dtype=out_dtype,
        scale=float(out_scale) if out_dtype != "float32" else 1.0,
        zero_point=int(out_zero) if out_dtype != "float32" else 0,
        scores="probabilities",  # the training contract: a softmax output
    )
    return input_spec, output_spec


def provenance(td: TrainingDir, options: ConvertOptions, tf_version: str, seconds: dict, correction=None) -> dict:
    """Where the bundle came from: the training run's identity and the conversion settings."""
    config = td.config
    dataset = {}
    if (td.path / DATASET).is_file():
        import json

        try:
            dataset = json.loads((td.path / DATASET).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            log.warning("%s: not valid JSON; provenance will lack the dataset fingerprint", td.path / DATASET)
    keys = ("backbone", "alpha", "input_size", "resize", "weights", "epochs", "seed")
    return {
        **{k: config.get(k) for k in keys if k in config},
        "dataset_fingerprint": config.get("dataset_fingerprint")
        or (dataset.get("fingerprint") if isinstance(dataset, dict) else None),
        "trained_with": config.get("edgeclass_version"),
        "training_dir": str(td.path.resolve()),
        "made_by": "edgeclass convert",
        "conversion": {
            "quantization": "float32" if options.float_model else "int8 full-integer post-training",
            "io": None if options.float_model else options.io,
            "weights": "per-tensor" if options.per_tensor else "per-channel",
            "calibration_size": None if options.float_model else options.calibration_size,
            "calibration_source": "train split, stratified by class",
            "calibration_seed": options.seed,
            "bias_correction": correction.to_json() if correction is not None else None,
            "normalization": options.normalization,
            "tensorflow": tf_version,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
        },
    }


def validate_bundle(out_dir: Path) -> None:
    """Load the written bundle as the Pi will and run one inference on it."""
    bundle = load_bundle(out_dir)
    classifier = open_classifier(bundle, num_threads=1, edgetpu=EdgeTPU.OFF)
    frame = np.full((bundle.input.height, bundle.input.width, 3), 127, np.uint8)
    scores = classifier.scores(Preprocessor(bundle.input)(frame))
    if scores.shape != (len(bundle.labels),) or not np.all(np.isfinite(scores)):
        raise BundleError(f"{bundle.model_path}: test inference gave {scores.shape} scores, expected {len(bundle.labels)} finite values")


def compile_into_bundle(out_dir: Path, preflight: Preflight, bundle_kwargs: dict, options: ConvertOptions,
                        work: Path) -> edgetpu_compile.CompileReport:
    """Compile the bundle's model for the Edge TPU and atomically add it to the bundle."""
    if not preflight.fully_mapped:
        log.warning("pre-flight: %s", preflight.summary())
    try:
        compiler = edgetpu_compile.find_compiler(options.edgetpu_compiler)
    except edgetpu_compile.EdgeTPUCompilerError as exc:
        raise edgetpu_compile.EdgeTPUCompilerError(f"{exc}; the CPU bundle {out_dir} is complete and usable") from None
    # Compile the exact bytes that are in the bundle (the hash in bundle.json covers them).
    source = work / "edgetpu" / "model.tflite"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes((out_dir / "model.tflite").read_bytes())
    try:
        compiled, report, text = edgetpu_compile.compile_for_edgetpu(source, work / "edgetpu", compiler)
    except edgetpu_compile.EdgeTPUCompilerError as exc:
        raise edgetpu_compile.EdgeTPUCompilerError(f"{exc}; the CPU bundle {out_dir} is complete and usable") from None
    log_path = bundle_kwargs["report_dir"] / "edgetpu_compiler.log"
    log_path.write_text(text, encoding="utf-8")
    edgetpu = {"compiled": True, "preflight": preflight.to_json(), "compiler": report.to_json()}
    write_bundle(out_dir, edgetpu_model=compiled, edgetpu=edgetpu, force=True, **bundle_kwargs)
    validate_bundle(out_dir)
    return report

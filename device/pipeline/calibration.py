"""Are the scores probabilities? Calibration figures and temperature scaling, with numpy only.

A classifier is calibrated when, of the images it answers with a top score
near 0.8, about 80 % are right; only then does a device's ``--threshold``
mean what it says. Three stages measure it with the code here, so a figure
means the same everywhere: the trainer's report, ``edgeclass convert`` (float
and int8) and the device's ``edgeclass bundle evaluate``.

Definitions used throughout:

- **Binning**: the top-1 score of each image falls into one of
  :data:`DEFAULT_BINS` equal-width bins over [0, 1]; bin ``b`` holds scores in
  ``(b/B, (b+1)/B]`` (a score of exactly 0 goes into the first bin).
- **ECE** (expected calibration error, Guo et al. 2017): the mean over images
  of ``|accuracy - mean top score|`` of their bin, i.e. the bins' gaps
  weighted by how many images they hold. 0 is perfect; it is a fraction, like
  accuracy.
- **Temperature scaling**: ``softmax(logits / T)`` with one ``T > 0`` fitted by
  minimising the negative log-likelihood on the validation split. ``T > 1``
  softens over-confident scores, ``T < 1`` sharpens under-confident ones (for
  example after label smoothing). Dividing logits by a positive number never
  changes the top-1 answer, so accuracy is untouched. The logits are recovered
  from softmax scores as ``log(p)`` (softmax is invariant to the constant that
  drops out), so a model that outputs probabilities needs no second head.
- **Is it calibrated?** Even a perfectly calibrated model shows some ECE on a
  finite split. :func:`consistency_p_value` draws the answers a perfectly
  calibrated model would give at the observed scores (each image right with
  probability equal to its score) and reports how often such a model shows an
  ECE at least as large as the observed one. A small p (below
  :data:`P_NOT_CALIBRATED`) means the scores are not calibrated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_BINS = 15
P_NOT_CALIBRATED = 0.05
CONSISTENCY_DRAWS = 2000
# Where a device --threshold is usually set: the report says what each would do.
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
MODES = ("auto", "on", "off")  # see decide_temperature
TEMPERATURE_RANGE = (0.05, 20.0)
# float32 softmax underflows to exactly 0 for very unlikely classes: log(0) would be -inf.
_SMALLEST = 1e-38


def binning_description(bins: int = DEFAULT_BINS) -> str:
    """One line naming the binning, for reports."""
    return f"top-1 score in {bins} equal-width bins over [0, 1]; ECE = bins' |accuracy - mean score| weighted by images"


def top1(scores: np.ndarray, y_true) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, correct)``: each row's top score and whether its argmax is the true label."""
    scores = np.asarray(scores, np.float64)
    y_true = np.asarray(y_true, np.int64)
    if scores.ndim != 2 or len(scores) != len(y_true):
        raise ValueError(f"expected (N, K) scores for N labels, got {scores.shape} for {len(y_true)}")
    return scores.max(axis=1), scores.argmax(axis=1) == y_true


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability_bins(confidence, correct, bins: int = DEFAULT_BINS) -> list[dict]:
    """Per bin: its score range, how many images, their mean top score and their accuracy (None when empty)."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    index = _bin_index(confidence, bins)
    count = np.bincount(index, minlength=bins)
    score_sum = np.bincount(index, weights=confidence, minlength=bins)
    right = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    out = []
    for b in range(bins):
        n = int(count[b])
        out.append({"lower": round(b / bins, 6), "upper": round((b + 1) / bins, 6), "count": n,
                    "confidence": round(float(score_sum[b] / n), 6) if n else None,
                    "accuracy": round(float(right[b] / n), 6) if n else None})
    return out


def expected_calibration_error(confidence, correct, bins: int = DEFAULT_BINS) -> float:
    """ECE as defined in the module docstring (0.0 for no images)."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    if confidence.size == 0:
        return 0.0
    return float(_ece_many(confidence, correct[None, :], bins)[0])


def _ece_many(confidence: np.ndarray, outcomes: np.ndarray, bins: int) -> np.ndarray:
    """ECE of each row of ``outcomes`` (draws x N booleans) at the same confidences."""
    index = _bin_index(confidence, bins)
    onehot = np.zeros((confidence.size, bins))
    onehot[np.arange(confidence.size), index] = 1.0
    count = onehot.sum(axis=0)
    score_sum = confidence @ onehot
    right = outcomes.astype(np.float64) @ onehot  # draws x bins
    return np.abs(right - score_sum).sum(axis=1) / confidence.size


def consistency_p_value(confidence, correct, bins: int = DEFAULT_BINS, draws: int = CONSISTENCY_DRAWS,
                        seed: int = 0) -> float:
    """How often a perfectly calibrated model with these scores shows at least the observed ECE.

    Each draw makes every image right with probability equal to its score;
    the result is ``(1 + draws at least as bad) / (1 + draws)``, so never 0.
    Seeded: the same inputs give the same p.
    """
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    if confidence.size == 0:
        return 1.0
    observed = _ece_many(confidence, correct[None, :], bins)[0]
    rng = np.random.default_rng(seed)
    worse = 0
    for start in range(0, draws, 250):  # bounded memory for large splits
        n = min(250, draws - start)
        outcomes = rng.random((n, confidence.size)) < confidence
        worse += int((_ece_many(confidence, outcomes, bins) >= observed - 1e-12).sum())
    return (1 + worse) / (1 + draws)


def log_scores(scores) -> np.ndarray:
    """Logits (up to a per-row constant) of softmax scores: ``log(p)``, float64, finite."""
    return np.log(np.maximum(np.asarray(scores, np.float64), _SMALLEST))


def scale_scores(scores, temperature: float) -> np.ndarray:
    """``softmax(log(scores) / T)``: what a model with ``T`` folded into its last layer outputs."""
    z = log_scores(scores) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(scores, y_true, temperature: float = 1.0) -> float:
    """Mean ``-log p(true label)`` of the scores after temperature ``T``."""
    z = log_scores(scores) / float(temperature)
    z_max = z.max(axis=1, keepdims=True)
    log_norm = (z_max + np.log(np.exp(z - z_max).sum(axis=1, keepdims=True)))[:, 0]
    y = np.asarray(y_true, np.int64)
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(scores, y_true, bounds: tuple[float, float] = TEMPERATURE_RANGE, tol: float = 1e-7) -> float:
    """The ``T`` in ``bounds`` that minimises :func:`negative_log_likelihood` on these scores.

    The likelihood is convex in ``1/T``, so it has one minimum; a golden-section
    search over ``log T`` finds it to ``tol`` (relative).
    """
    scores, y = np.asarray(scores, np.float64), np.asarray(y_true, np.int64)
    if len(y) == 0:
        raise ValueError("no images to fit a temperature on")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return negative_log_likelihood(scores, y, math.exp(log_t))

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return math.exp((lo + hi) / 2)


def threshold_table(confidence, correct, thresholds=THRESHOLDS) -> list[dict]:
    """For each device ``--threshold``: the share of images answered (top score >= it) and their accuracy."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    rows = []
    for t in thresholds:
        kept = confidence >= t
        n = int(kept.sum())
        rows.append({"threshold": t, "answered": round(n / confidence.size, 6) if confidence.size else None,
                     "images": n, "accuracy": round(float(correct[kept].mean()), 6) if n else None})
    return rows


def summary(confidence, correct, bins: int = DEFAULT_BINS) -> dict:
    """Every calibration figure of one set of answers: ECE, reliability bins, the threshold table."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, bool)
    n = int(confidence.size)
    return {
        "images": n,
        "accuracy": round(float(correct.mean()), 6) if n else None,
        "mean_confidence": round(float(confidence.mean()), 6) if n else None,
        "ece": round(expected_calibration_error(confidence, correct, bins), 6),
        "bins": reliability_bins(confidence, correct, bins),
        "thresholds": threshold_table(confidence, correct),
    }


def scores_summary(scores, y_true, bins: int = DEFAULT_BINS) -> dict:
    """:func:`summary` of (N, K) scores against true label indices."""
    return summary(*top1(scores, y_true), bins=bins)


@dataclass(frozen=True)
class TemperatureDecision:
    """Whether to scale, by what, and the validation figures behind the choice."""

    temperature: float | None  # None: scores left as they are
    reason: str
    val_ece: float
    val_ece_after: float | None
    p_value: float
    val_images: int

    def to_json(self) -> dict:
        out = {"images": self.val_images, "ece": round(self.val_ece, 6), "p_calibrated": round(self.p_value, 6),
               "p_threshold": P_NOT_CALIBRATED}
        if self.val_ece_after is not None:
            out["ece_after"] = round(self.val_ece_after, 6)
        return out


def decide_temperature(val_scores, val_y, mode: str = "auto", bins: int = DEFAULT_BINS) -> TemperatureDecision:
    """Fit a temperature on validation scores when ``mode`` asks for one.

    ``off``: never. ``on``: always. ``auto``: when the validation scores are
    not calibrated (:func:`consistency_p_value` below :data:`P_NOT_CALIBRATED`)
    and the fitted temperature lowers the validation ECE.
    """
    if mode not in MODES:
        raise ValueError(f"calibration mode {mode!r}: expected one of {', '.join(MODES)}")
    confidence, correct = top1(val_scores, val_y)
    ece = expected_calibration_error(confidence, correct, bins)
    p = consistency_p_value(confidence, correct, bins)
    n = int(len(correct))
    if mode == "off":
        return TemperatureDecision(None, "temperature scaling off", ece, None, p, n)
    if n == 0:
        return TemperatureDecision(None, "no validation images to fit a temperature on", ece, None, p, n)
    if mode == "auto" and p >= P_NOT_CALIBRATED:
        return TemperatureDecision(None, f"validation scores are consistent with calibration (p = {p:.3f})", ece, None, p, n)
    temperature = fit_temperature(val_scores, val_y)
    after = expected_calibration_error(*top1(scale_scores(val_scores, temperature), val_y), bins)
    if mode == "auto" and after >= ece:
        return TemperatureDecision(None, f"a temperature of {temperature:.3f} would not lower the validation ECE",
                                   ece, None, p, n)
    why = "asked for" if mode == "on" else f"validation scores are not calibrated (p = {p:.3f})"
    return TemperatureDecision(temperature, why, ece, after, p, n)


def evaluation_calibration(confidence, correct, bins: int = DEFAULT_BINS) -> dict:
    """The calibration figures of one evaluation (for example ``bundle evaluate`` on the device).

    ``confidence`` is each image's top-1 score as the model output it,
    ``correct`` whether that answer was right. The result is :func:`summary`
    plus the binning's description, the same figures ``edgeclass convert``
    records for the bundle's model on the test split, so the two compare
    directly (the ECE, the reliability bins, the ``--threshold`` table).
    """
    return {"binning": binning_description(bins), **summary(confidence, correct, bins)}


def calibration_lines(figures: dict) -> list[str]:
    """Human-readable lines of :func:`summary` figures: the ECE and what each ``--threshold`` keeps."""
    if not figures.get("images"):
        return ["calibration: no images"]
    lines = [f"calibration ECE {figures['ece']:.4f} over {figures['images']} images (accuracy {figures['accuracy']:.2%}, "
             f"mean top score {figures['mean_confidence']:.3f}; 0 is calibrated)"]
    for row in figures["thresholds"]:
        kept = "no answers" if row["accuracy"] is None else f"accuracy {row['accuracy']:.2%}"
        lines.append(f"  --threshold {row['threshold']:.2f}: answers {row['answered']:.1%} of images, {kept}")
    return lines


def plot_reliability(panels: list[tuple[str, list[tuple[str, dict]]]], path) -> None:
    """Reliability diagrams drawn from :func:`summary` figures, one panel per ``(title, [(name, figures), ...])``.

    Bars are each series' accuracy per bin against the diagonal a calibrated
    model sits on; underneath, the share of images per bin. Needs matplotlib
    (the workstation has it; on a device install, check with
    ``importlib.util.find_spec("matplotlib")`` first).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never try to open a window (a Pi over ssh has no display)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 5.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    colours = ("#9aa5b1", "tab:blue", "tab:orange", "tab:green")
    for col, (title, series) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        top.plot([0, 1], [0, 1], "--", color="black", linewidth=1, label="calibrated")
        n = max(1, len(series))
        for k, (name, figures) in enumerate(series):
            bins = figures["bins"]
            width = (bins[0]["upper"] - bins[0]["lower"]) / n
            filled = [b for b in bins if b["count"]]
            xs = [b["lower"] + (k + 0.5) * width for b in filled]
            colour = colours[k % len(colours)]
            top.bar(xs, [b["accuracy"] for b in filled], width=width * 0.95, color=colour, alpha=0.85,
                    label=f"{name}: ECE {figures['ece']:.3f}")
            total = max(1, figures["images"])
            bottom.bar(xs, [b["count"] / total for b in filled], width=width * 0.95, color=colour, alpha=0.85)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy in bin")
        top.set_title(title, fontsize=10)
        top.legend(fontsize=8, loc="upper left")
        top.grid(alpha=0.3)
        bottom.set_xlabel("top-1 score")
        bottom.set_ylabel("share of images")
        bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

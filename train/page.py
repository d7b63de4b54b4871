"""The run's one page, ``report/index.html``: every figure of training, conversion and calibration.

Self-contained: CSS inline, images as ``data:`` URIs, no script, and a
Content-Security-Policy that forbids the page any request of its own, so it
opens the same from a laptop, an e-mail attachment or a Pi with no network.

Every number on the page is a value of one of the JSON files it was built
from, printed in a ``<span data-src="SOURCE:/json/pointer">`` (sources:
:mod:`.page_sources`); ``data-scale`` says when a value is shown in other
units (KiB). Text from those files that may hold digits (labels, paths) is in
``data-literal`` spans. Nothing else on the page is a number, which is what
lets a test check the page against the files.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from edgeclass.device import __version__

from .page_sources import PageSources

CSS = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2430;background:#f4f6f9}
header{background:#17324d;color:#fff;padding:20px 28px 12px}
header h1{margin:0 0 4px;font-size:24px}
header .sub{opacity:.85;margin:0 0 14px}
nav a{color:#cfe3ff;margin-right:14px;text-decoration:none;font-size:14px}
main{padding:8px 28px 40px;max-width:1280px}
section{background:#fff;border-radius:8px;padding:14px 20px 18px;margin:18px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:19px;margin:4px 0 10px}
h3{font-size:15px;margin:14px 0 6px}
.cards{display:flex;gap:14px;flex-wrap:wrap}
.card{background:rgba(255,255,255,.12);border-radius:8px;padding:10px 16px;min-width:150px}
.card .big{font-size:30px;font-weight:700}
.card .what{font-size:13px;opacity:.9}
table{border-collapse:collapse;margin:6px 0 10px;font-size:14px}
th,td{padding:4px 10px;border-bottom:1px solid #e4e8ee;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#eef2f7}
.cm td{min-width:42px;text-align:center}
.cm th.rot{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;height:90px}
.pair{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
.note{color:#5b6675;font-size:13px}
.good{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;background:#f8f9fb;border:1px solid #e4e8ee;border-radius:6px;padding:6px;font-size:12.5px}
figure img{width:128px;height:128px;image-rendering:auto;display:inline-block;margin-right:2px}
figcaption{max-width:400px;margin-top:4px}
figcaption code{font-size:11.5px;color:#5b6675;word-break:break-all}
img.figure{max-width:100%;height:auto}
tr.best td{background:#eaf5ea}
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _pointer(parts) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _get(data, parts):
    for part in parts:
        data = data[part] if isinstance(data, dict) else data[int(part)]
    return data


def num(source: str, parts, value, kind: str = "f3") -> str:
    """A number from ``source`` at ``parts``, formatted as ``kind``: pct, pp, f2, f3, f4, int, sci, kib."""
    if value is None:
        return '<span class="na">n/a</span>'
    value = float(value)
    text = {"pct": f"{100 * value:.2f}%", "pp": f"{value:+.2f}", "f2": f"{value:.2f}", "f3": f"{value:.3f}",
            "f4": f"{value:.4f}", "int": f"{int(round(value))}", "sci": f"{value:.2e}",
            "kib": f"{value / 1024:.0f}"}[kind]
    scale = ' data-scale="1024"' if kind == "kib" else ""
    return f'<span class="n" data-src="{source}:{html.escape(_pointer(parts))}"{scale}>{text}</span>'


def lit(source: str, parts, value) -> str:
    """Text from a source file (a label, a path) that is shown as it is."""
    return f'<span data-literal="{source}:{html.escape(_pointer(parts))}">{html.escape(str(value))}</span>'


def _img(data: bytes | None, mime: str, alt: str, cls: str = "") -> str:
    if not data:
        return ""
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<img{f" class={chr(34)}{cls}{chr(34)}" if cls else ""} alt="{html.escape(alt)}" src="{uri}">'


class _Page:
    """Builds the sections from one :class:`PageSources`."""

    def __init__(self, s: PageSources):
        self.s = s
        self.m = s.metrics
        self.labels = s.labels

    def m_num(self, parts, kind="f3"):
        return num("metrics", parts, _maybe(self.m, parts), kind)

    def b_num(self, parts, kind="f3"):
        return num("bundle", parts, _maybe(self.s.bundle, parts), kind)

    def label(self, i: int) -> str:
        return lit(self.s.labels_source, ["labels", i], self.labels[i])

    # -- header -------------------------------------------------------------------------------------------
    def header(self) -> str:
        m, s = self.m, self.s
        model = ""
        if "backbone" in m:
            model = (f'{lit("metrics", ["backbone"], m["backbone"])} alpha {self.m_num(["alpha"], "f2")} at '
                     f'{self.m_num(["input_size"], "int")} px, ')
        if m:
            cards = [f'<div class="card"><div class="big" id="accuracy">{self.m_num(["accuracy"], "pct")}</div>'
                     f'<div class="what">test accuracy (float model), {self.m_num(["num_images"], "int")} images</div></div>']
        else:  # a run without a training report: the conversion measured the float model too
            cards = [f'<div class="card"><div class="big" id="accuracy">{self.b_num(["float_accuracy"], "pct")}</div>'
                     f'<div class="what">test accuracy (float model), {self.b_num(["test_images"], "int")} images</div></div>']
        if s.bundle:
            name = _candidate(s.bundle)
            cards.append(f'<div class="card"><div class="big" id="int8-accuracy">{self.b_num([f"{name}_accuracy"], "pct")}</div>'
                         f'<div class="what">{html.escape(_model_name(name))} on the same test images, top-1 agreement '
                         f'{self.b_num(["agreement"], "pct")}</div></div>')
        cal = m.get("calibration")
        if cal:
            key = "ece_after" if "ece_after" in cal else "ece"
            what = "after temperature scaling" if key == "ece_after" else "as trained"
            cards.append(f'<div class="card"><div class="big">{self.m_num(["calibration", key], "f3")}</div>'
                         f'<div class="what">expected calibration error, {what}</div></div>')
        gap = m.get("train_val_gap") or {}
        if gap.get("gap") is not None:
            cards.append(f'<div class="card"><div class="big">{self.m_num(["train_val_gap", "gap"], "f3")}</div>'
                         '<div class="what">train minus validation accuracy</div></div>')
        links = [("metrics", "Metrics"), ("classes", "Per class"), ("confusion", "Confusion"), ("int8", "Float vs int8"),
                 ("curves", "Curves"), ("calibration", "Calibration"), ("errors", "Worst errors"),
                 ("correct", "Correct answers")] + ([("search", "Search")] if s.trials else [])
        nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in links)
        return (f'<header><h1>{lit("page", ["title"], s.title)}</h1>'
                f'<p class="sub">{model}labels {", ".join(self.label(i) for i in range(len(self.labels)))}</p>'
                f'<div class="cards">{"".join(cards)}</div><nav>{nav}</nav></header>')

    # -- metrics --------------------------------------------------------------------------------------------
    def metrics(self) -> str:
        if not self.m:
            return ('<section id="metrics"><h2>Metrics</h2><p>This run has no training report '
                    '(<code>report/metrics.json</code>); <code>edgeclass evaluate RUN</code> makes one.</p></section>')
        rows = [f'<tr><td>accuracy</td><td colspan="3">{self.m_num(["accuracy"], "pct")}</td></tr>']
        for key, name in (("macro_avg", "macro average"), ("weighted_avg", "weighted average")):
            if key in self.m:
                rows.append(f"<tr><td>{name}</td>" + "".join(
                    f"<td>{self.m_num([key, k], 'f3')}</td>" for k in ("precision", "recall", "f1")) + "</tr>")
        table = ('<table><thead><tr><th></th><th>precision</th><th>recall</th><th>F1</th></tr></thead>'
                 f'<tbody>{"".join(rows)}</tbody></table>')
        extra = []
        gap = self.m.get("train_val_gap") or {}
        if gap:
            extra.append(f'<p>Train accuracy {self.m_num(["train_val_gap", "train_accuracy"], "pct")}, validation accuracy '
                         f'{self.m_num(["train_val_gap", "val_accuracy"], "pct")}, gap {self.m_num(["train_val_gap", "gap"], "f3")}'
                         ' (a large gap means overfitting: more data or stronger augmentation).</p>')
        training = self.m.get("training") or {}
        if training:
            bits = []
            if training.get("head_epochs") is not None:
                bits.append(f'{self.m_num(["training", "head_epochs"], "int")} head epochs')
            if training.get("finetune_epochs") is not None:
                bits.append(f'{self.m_num(["training", "finetune_epochs"], "int")} fine-tuning epochs')
            if training.get("best_epoch") is not None:
                bits.append(f'best epoch {lit("metrics", ["training", "best_epoch"], training["best_epoch"])}')
            if training.get("best_val_loss") is not None:
                bits.append(f'validation loss {self.m_num(["training", "best_val_loss"], "f4")}')
            extra.append(f'<p>Training: {", ".join(bits)}.</p>')
        taught = self.m.get("distillation") or {}
        if taught:
            teacher = taught.get("teacher") or {}
            parts = ["distillation"]
            what = (f'Knowledge distilled from {lit("metrics", ["distillation", "teacher", "path"], teacher.get("path"))}'
                    f' ({lit("metrics", ["distillation", "teacher", "backbone"], teacher.get("backbone"))} alpha '
                    f'{self.m_num([*parts, "teacher", "alpha"], "f2")}, validation accuracy '
                    f'{self.m_num([*parts, "teacher", "val_accuracy"], "pct")})')
            extra.append(f'<p>{what}: the teacher\'s share of the loss {self.m_num([*parts, "weight"], "f2")}, '
                         f'temperature {self.m_num([*parts, "temperature"], "f2")} (edgeclass train --teacher).</p>')
        split = self.m.get("split") or "test"
        return (f'<section id="metrics"><h2>Metrics</h2><p class="note">On the {html.escape(_split_name(split))} split: '
                'images never used for training or for choosing the model.</p>' + table + "".join(extra) + "</section>")

    def per_class(self) -> str:
        b = self.s.bundle
        name = _candidate(b) if b else None
        head = "<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>images</th>"
        if b:
            head += f"<th>float recall (bundle)</th><th>{html.escape(_model_name(name))} recall</th><th>change (points)</th>"
        if not self.m:
            head = "<tr><th>class</th><th>images</th>" + head[len("<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>images</th>"):]
        rows = []
        for i, label in enumerate(self.labels):
            if self.m:
                key = list(self.m["per_class"])[i]
                cells = "".join(f"<td>{self.m_num(['per_class', key, k], 'f3')}</td>" for k in ("precision", "recall", "f1"))
                cells += f"<td>{self.m_num(['per_class', key, 'support'], 'int')}</td>"
            else:
                cells = f"<td>{self.b_num(['per_class', label, 'images'], 'int')}</td>"
            if b and label in b.get("per_class", {}):
                cells += (f"<td>{self.b_num(['per_class', label, 'float_accuracy'], 'pct')}</td>"
                          f"<td>{self.b_num(['per_class', label, f'{name}_accuracy'], 'pct')}</td>"
                          f"<td>{self.b_num(['per_class', label, 'delta_pp'], 'pp')}</td>")
            rows.append(f"<tr><td>{self.label(i)}</td>{cells}</tr>")
        return (f'<section id="classes"><h2>Per class</h2><table><thead>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
                '<p class="note">Recall is the share of a class\'s test images recognised; precision the share of '
                'answers of that class that were right.</p></section>')

    # -- confusion ---------------------------------------------------------------------------------------
    def confusion_table(self, source: str, parts, matrix, title: str) -> str:
        header = "".join(f'<th class="rot">{self.label(i)}</th>' for i in range(len(self.labels)))
        rows = []
        for t, row in enumerate(matrix):
            total = max(1, sum(row))
            cells = []
            for p, count in enumerate(row):
                share = count / total
                colour = f"rgba(31,94,170,{0.08 + 0.85 * share:.3f})" if count else "transparent"
                ink = "#fff" if share > 0.5 else "#1d2430"
                cells.append(f'<td style="background:{colour};color:{ink}">{num(source, [*parts, t, p], count, "int")}</td>')
            rows.append(f"<tr><th>{self.label(t)}</th>{''.join(cells)}</tr>")
        return (f'<div><h3>{title}</h3><table class="cm"><thead><tr><th>true \u2193 predicted \u2192</th>{header}</tr></thead>'
                f'<tbody>{"".join(rows)}</tbody></table></div>')

    def confusion(self) -> str:
        tables = [self.confusion_table("metrics", ["confusion_matrix"], self.m["confusion_matrix"], "float model (training report)")] \
            if self.m else []
        b = self.s.bundle
        if b:
            name = _candidate(b)
            for model in ("float", name):
                if model in b.get("confusion_matrices", {}):
                    tables.append(self.confusion_table("bundle", ["confusion_matrices", model], b["confusion_matrices"][model],
                                                       f"{html.escape(_model_name(model))} (conversion, test)"))
        return (f'<section id="confusion"><h2>Confusion matrices</h2><p class="note">Rows are the true class, columns the '
                'answer; colour is the share of the row.</p><div class="pair">' + "".join(tables) + "</div></section>")

    # -- conversion -------------------------------------------------------------------------------------
    def conversion(self) -> str:
        b = self.s.bundle
        if not b:
            return ('<section id="int8"><h2>Float vs int8</h2><p>No bundle yet: <code>edgeclass convert RUN -o BUNDLE</code> '
                    'measures the int8 model and adds its side to this page.</p></section>')
        name = _candidate(b)
        gate = b.get("gate") or {}
        rows = []
        for title, parts in (("validation (the gate)", ["validation"]), ("test (reported only)", [])):
            part = _maybe(b, parts) if parts else b
            if not part:
                continue
            cells = "".join(f"<td>{self.b_num([*parts, k], 'pct')}</td>" for k in ("float_accuracy", "float_tflite_accuracy", f"{name}_accuracy")
                            if k in part)
            rows.append(f"<tr><td>{title}</td>{cells}<td>{self.b_num([*parts, 'drop_pp'], 'f2')}</td>"
                        f"<td>{self.b_num([*parts, 'agreement'], 'pct')}</td></tr>")
        heads = "".join(f"<th>{t}</th>" for t, k in (("float Keras", "float_accuracy"), ("float TFLite", "float_tflite_accuracy"),
                                                     (_model_name(name), f"{name}_accuracy")) if k in b)
        verdict = ""
        if gate:
            passed = gate.get("passed")
            verdict = (f'<p>Gate on the validation split: <span class="{"good" if passed else "bad"}">'
                       f'{"passed" if passed else "refused"}</span> (at most {self.b_num(["gate", "max_drop_pp"], "f2")} points '
                       f'lost and at least {self.b_num(["gate", "min_agreement"], "pct")} top-1 agreement; one image is '
                       f'{self.b_num(["gate", "one_image_pp"], "f2")} points).</p>')
        sizes = b.get("model_sizes") or {}
        size = ""
        if sizes:
            bits = [f'{t} {self.b_num(["model_sizes", k], "kib")} KiB' for t, k in
                    (("model.keras", "keras_bytes"), ("float TFLite", "float_tflite_bytes"), ("int8 TFLite", "int8_tflite_bytes")) if k in sizes]
            size = f'<p>Sizes: {", ".join(bits)}.</p>'
        where = f'<p class="note">Bundle {lit("page", ["bundle"], self.s.bundle_path)}.</p>' if self.s.bundle_path else ""
        return (f'<section id="int8"><h2>Float vs int8</h2>{where}<table><thead><tr><th>split</th>{heads}<th>drop (points)</th>'
                f'<th>agreement</th></tr></thead><tbody>{"".join(rows)}</tbody></table>{verdict}{size}</section>')

    def curves(self) -> str:
        body = _img(self.s.curves_png, "image/png", "training curves", "figure") or \
            '<p>No training history in this run (<code>logs/history.csv</code>).</p>'
        return f'<section id="curves"><h2>Training curves</h2>{body}</section>'

    # -- calibration -----------------------------------------------------------------------------------
    def calibration(self) -> str:
        cal, b = self.m.get("calibration"), self.s.bundle
        bcal = (b or {}).get("calibration")
        if not cal and not bcal:
            return ('<section id="calibration"><h2>Calibration</h2><p>Not measured for this run (trained by an older '
                    'edgeclass): <code>edgeclass evaluate RUN</code> measures it.</p></section>')
        parts = ['<section id="calibration"><h2>Calibration</h2>']
        source, c = ("metrics", cal) if cal else ("bundle", bcal)
        parts.append(f'<p class="note">Binning: {lit(source, ["calibration", "binning"], c["binning"])}.</p>')
        rows = []
        if cal:
            split = f"float model, {_split_name(cal.get('split', 'test'))} split"
            rows.append(self._cal_row("metrics", ["calibration"], split, "ece", "temperature", "ece_after"))
            parts.append(f'<p>Decision: {lit("metrics", ["calibration", "decision"], cal["decision"])} (validation ECE '
                         f'{self.m_num(["calibration", "val", "ece"], "f3")}; chance that a calibrated model shows that much: '
                         f'{self.m_num(["calibration", "val", "p_calibrated"], "f3")}, scaled below '
                         f'{self.m_num(["calibration", "val", "p_threshold"], "f2")}).</p>')
        if bcal:
            name = _candidate(b)
            for split in ("val", "test"):
                if split not in bcal.get("splits", {}):
                    continue
                sp = ["calibration", "splits", split]
                for model, before_key in (("float", "float_before"), (name, f"{name}_before")):
                    if model not in bcal["splits"][split]:
                        continue
                    label = f"{_model_name(model)} (bundle), {_split_name(split)} split"
                    before = [*sp, before_key, "ece"] if before_key in bcal["splits"][split] else [*sp, model, "ece"]
                    after = [*sp, model, "ece"] if before_key in bcal["splits"][split] else None
                    rows.append(f"<tr><td>{html.escape(label)}</td><td>{self.b_num(before, 'f3')}</td>"
                                f"<td>{self.b_num(['calibration', 'temperature'], 'f3') if after else '-'}</td>"
                                f"<td>{self.b_num(after, 'f3') if after else '-'}</td></tr>")
        parts.append('<table><thead><tr><th>scores</th><th>ECE as trained</th><th>temperature</th><th>ECE after</th></tr></thead>'
                     f'<tbody>{"".join(rows)}</tbody></table>')
        parts.append(self._thresholds())
        figures = _img(self.s.reliability_png, "image/png", "reliability diagram (training report)", "figure") + \
            _img(self.s.bundle_reliability_png, "image/png", "reliability diagram (bundle)", "figure")
        parts.append(f'<div class="pair">{figures}</div>')
        parts.append('<p class="note">A calibrated model\'s top score is the chance that its answer is right: of the '
                     'answers given with a score near a value, that share is correct. Then the device\'s '
                     '<code>--threshold</code> is a promise you can read off the table above: the device answers '
                     '<code>unknown</code> below it, and the answers it keeps are about as accurate as listed. '
                     'Temperature scaling divides the last layer\'s outputs by one number fitted on the validation split; '
                     'it never changes which class wins, so accuracy stays the same. <code>edgeclass convert</code> folds it '
                     'into the bundle\'s model.</p></section>')
        return "".join(parts)

    def _cal_row(self, source, parts, title, before, temperature, after) -> str:
        c = _maybe(self.s.metrics if source == "metrics" else self.s.bundle, parts)
        fitted = temperature in c
        return (f"<tr><td>{html.escape(title)}</td><td>{num(source, [*parts, before], c.get(before), 'f3')}</td>"
                f"<td>{num(source, [*parts, temperature], c.get(temperature), 'f3') if fitted else '-'}</td>"
                f"<td>{num(source, [*parts, after], c.get(after), 'f3') if fitted else '-'}</td></tr>")

    def _thresholds(self) -> str:
        """What each device --threshold would do: from the bundle's shipped model on test, else the float model."""
        b = self.s.bundle
        bcal = (b or {}).get("calibration")
        if bcal and "test" in bcal.get("splits", {}):
            name = _candidate(b)
            source, parts, who = "bundle", ["calibration", "splits", "test", name, "thresholds"], _model_name(name) + " model (bundle)"
        else:
            cal = self.m.get("calibration")
            if not cal:
                return ""
            key = "after" if "after" in cal else "before"
            source, parts, who = "metrics", ["calibration", key, "thresholds"], "float model" + (", calibrated" if key == "after" else "")
        rows = _maybe(self.s.bundle if source == "bundle" else self.m, parts) or []
        body = "".join(f"<tr><td>{num(source, [*parts, i, 'threshold'], r['threshold'], 'f2')}</td>"
                       f"<td>{num(source, [*parts, i, 'answered'], r['answered'], 'pct')}</td>"
                       f"<td>{num(source, [*parts, i, 'accuracy'], r['accuracy'], 'pct')}</td></tr>" for i, r in enumerate(rows))
        return (f'<h3>What <code>--threshold</code> does ({html.escape(who)}, test split)</h3><table><thead><tr><th>threshold</th>'
                f'<th>answered</th><th>accuracy of the answers</th></tr></thead><tbody>{body}</tbody></table>')

    # -- explained images ---------------------------------------------------------------------------------
    def examples(self, kind: str) -> str:
        title, anchor = ("Worst errors, with where the model looked", "errors") if kind == "worst" else \
            ("Correct answers per class, with where the model looked", "correct")
        entries = [(i, e) for i, e in enumerate(self.s.gradcam) if e["kind"] == kind]
        if not self.s.gradcam:
            return (f'<section id="{anchor}"><h2>{title}</h2><p>No heatmaps in this report: '
                    '<code>edgeclass evaluate RUN</code> computes them.</p></section>')
        if not entries:
            return f'<section id="{anchor}"><h2>{title}</h2><p>None in the test split.</p></section>'
        cards = []
        for i, e in entries:
            images = _img(self.s.images[e["image"]], "image/jpeg", "the model's input")
            images += _img(self.s.images[e["heat_predicted"]], "image/jpeg", f"heatmap for {e['predicted']}")
            if e.get("heat_true"):
                images += _img(self.s.images[e["heat_true"]], "image/jpeg", f"heatmap for {e['true']}")
            score = num("gradcam", [i, "score"], e["score"], "f3")
            if e.get("score_calibrated") is not None:
                score += f' (calibrated {num("gradcam", [i, "score_calibrated"], e["score_calibrated"], "f3")})'
            if kind == "worst":
                text = (f'true {lit("gradcam", [i, "true"], e["true"])}, answered {lit("gradcam", [i, "predicted"], e["predicted"])} '
                        f'at {score}; true class scored {num("gradcam", [i, "true_score"], e["true_score"], "f3")}. '
                        'Images: input, where it saw the answer, where it saw the true class.')
            else:
                text = f'{lit("gradcam", [i, "true"], e["true"])} at {score}'
            cards.append(f'<figure>{images}<figcaption>{text}<br><code>{lit("gradcam", [i, "path"], e["path"])}</code>'
                         '</figcaption></figure>')
        note = ('<p class="note">Red is where the evidence for a class was strongest (Grad-CAM on the last convolutional '
                'activation), over the centre crop the device feeds the model. An error whose heat sits on the background, '
                'on a second object or on a watermark often means a mislabelled or ambiguous photo.</p>')
        return f'<section id="{anchor}"><h2>{title}</h2>{note}<div class="grid">{"".join(cards)}</div></section>'

    # -- search --------------------------------------------------------------------------------------------
    def search(self) -> str:
        trials = self.s.trials
        if not trials:
            return ""
        keys = sorted({k for t in trials for k in (t.get("params") or {})})
        best = (self.s.config.get("search") or {}).get("best_trial")
        rows = []
        for i, t in enumerate(trials):
            params = "".join(f"<td>{self._param(i, k, (t.get('params') or {}).get(k))}</td>" for k in keys)
            epoch = lit("trials", [i, "best_epoch"], t["best_epoch"]) if t.get("best_epoch") is not None else "-"
            rows.append(f'<tr{" class=" + chr(34) + "best" + chr(34) if t.get("trial") == best else ""}>'
                        f'<td>{num("trials", [i, "trial"], t["trial"], "int")}</td><td>{html.escape(str(t.get("state", "")))}</td>'
                        f'{params}<td>{num("trials", [i, "best_val_loss"], t.get("best_val_loss"), "f4")}</td><td>{epoch}</td></tr>')
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        return (f'<section id="search"><h2>Hyperparameter search</h2><p class="note">Every trial trained on the training split '
                'and was scored on validation loss; the test split was used once, on the final model. The chosen trial is '
                f'highlighted.</p><table><thead><tr><th>trial</th><th>state</th>{head}<th>validation loss</th>'
                f'<th>best epoch</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')

    def _param(self, i: int, key: str, value) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return lit("trials", [i, "params", key], value)
        kind = "int" if isinstance(value, int) else ("sci" if abs(value) < 0.01 else "f3")
        return num("trials", [i, "params", key], value, kind)

    def footer(self) -> str:
        files = "".join(f'<li>{html.escape(name)}: <code data-file="{html.escape(name)}">{html.escape(path)}</code></li>'
                        for name, path in self.s.files.items())
        return (f'<section id="files"><h2>Where these figures come from</h2><ul>{files}</ul><p class="note">Made by '
                f'edgeclass {lit("page", ["version"], __version__)}; '
                '<code>edgeclass report RUN --bundle BUNDLE</code> rebuilds this page.</p></section>')

    def render(self) -> str:
        body = [self.header(), "<main>", self.metrics(), self.per_class(), self.confusion(), self.conversion(), self.curves(),
                self.calibration(), self.examples("worst"), self.examples("correct"), self.search(), self.footer(), "</main>"]
        return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<title>{html.escape(self.s.title)}: edgeclass report</title><style>{CSS}</style></head><body>'
                + "".join(body) + "</body></html>\n")


def _maybe(data, parts):
    try:
        return _get(data, parts)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _candidate(bundle: dict) -> str:
    """The bundle model's name in the conversion report: int8, or float_tflite for --float bundles."""
    compared = str(bundle.get("compared", "int8"))
    return "float_tflite" if compared.startswith("float_tflite") else "int8"


def _model_name(name: str) -> str:
    return {"float": "float Keras", "float_tflite": "float TFLite", "int8": "int8"}.get(name, name)


def _split_name(split: str) -> str:
    return {"val": "validation"}.get(split, split)


def render_page(sources: PageSources) -> str:
    """The page's HTML text."""
    return _Page(sources).render()


def write_page(sources: PageSources, path: Path) -> Path:
    """Write the page to ``path`` (atomically: a reader never sees half a page); returns ``path``."""
    from edgeclass.device.files import atomic_write

    atomic_write(Path(path), render_page(sources))
    return Path(path)


def build_page(report_dir: Path | None, run_dir: Path | None = None, bundle_report: Path | None = None,
               bundle_path: Path | str | None = None, out: Path | None = None, title: str | None = None) -> Path:
    """Read the sources and write the page (default ``report_dir/index.html``); returns its path.

    ``bundle_report`` is a conversion report folder (a bundle's ``report/``)
    and ``bundle_path`` the bundle it belongs to.
    """
    from .page_sources import PAGE, add_bundle, read_report

    sources = read_report(report_dir, run_dir, title, required=bundle_report is None)
    if bundle_report is not None:
        add_bundle(sources, bundle_report, bundle_path or Path(bundle_report).parent)
    target = Path(out) if out is not None else Path(report_dir) / PAGE
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_page(sources, target)

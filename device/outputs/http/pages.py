"""The HTML of the live, collect and review pages, rendered on the server.

Each page's first HTML already shows the current answer (label, score, top-k,
figures), so it reads right without JavaScript; ``/static/edgeclass.js`` only
keeps it live. Everything is served by the device itself (no fonts, scripts
or images from elsewhere), and every value that came from a bundle, a camera
or a file name is HTML-escaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Sequence
from urllib.parse import quote

from ..review import Pending

KEYS = "123456789abcdefghijklmnopqrstuvwxyz"  # keyboard keys of the collect buttons, in label order


@dataclass
class View:
    """What a page shows about the run (built by the server from the loop)."""

    token: str | None = None
    has_model: bool = True
    label: str | None = None
    score: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    fps: float | None = None
    latency_ms: float | None = None
    backend: str | None = None
    bundle_name: str | None = None
    accuracy: str | None = None  # e.g. "int8 93.1% (float 94.4%)"
    source: str | None = None
    frame_size: tuple[int, int] | None = None  # (width, height)
    crop: tuple[int, int, int, int] | None = None  # (left, top, width, height) in frame pixels
    rates: dict[str, float] = field(default_factory=dict)
    uncertain_rate: float | None = None
    mean_top_score: float | None = None
    confidence_dropped: bool = False
    collect: bool = False
    review: bool = False


def _q(view: View, path: str) -> str:
    """``path`` with the page's token carried on (the browser sends no header of its own)."""
    if not view.token:
        return path
    return f"{path}{'&' if '?' in path else '?'}token={quote(view.token, safe='')}"


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _page(view: View, title: str, active: str, body: str, kind: str) -> str:
    nav = [("live", "/", "Live"), ("collect", "/collect", "Collect"), ("review", "/review", "Review")]
    links = "".join(f'<a href="{escape(_q(view, href))}"{" class=active" if key == active else ""}>{text}</a>'
                    for key, href, text in nav if key == "live" or getattr(view, key))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · edgeclass</title>
<link rel="stylesheet" href="/static/edgeclass.css">
<script src="/static/edgeclass.js" defer></script>
</head><body data-page="{kind}">
<header><strong>edgeclass</strong><nav>{links}</nav><span class="muted">{escape(view.bundle_name or "no model")}</span></header>
{body}
</body></html>
"""


def _camera(view: View) -> str:
    w, h = view.frame_size or (4, 3)
    left, top, cw, ch = view.crop or (0, 0, w, h)
    hidden = "" if view.crop and view.has_model else " hidden"
    return f"""<div class="camera">
<img id="stream" src="{escape(_q(view, '/stream.mjpg'))}" alt="live camera view">
<svg id="crop" viewBox="0 0 {w} {h}" preserveAspectRatio="none"{hidden}>
<rect id="crop-box" x="{left}" y="{top}" width="{cw}" height="{ch}" fill="none" stroke="#ffd400" stroke-width="{max(2, w // 160)}" stroke-dasharray="{max(6, w // 40)} {max(4, w // 60)}"/></svg>
</div>"""


def _answer(view: View) -> str:
    if not view.has_model:
        return '<section class="answer"><p class="muted">No model: capture only. Save photos, train, then run the model.</p></section>'
    rows = "".join(f"<tr><td>{escape(label)}</td><td>{score:.2f}</td></tr>" for label, score in view.top_k)
    return f"""<section class="answer">
<div id="label" class="label">{escape(view.label or "waiting for a frame")}</div>
<div class="score">score <span id="score">{_score(view.score)}</span></div>
<table class="topk"><thead><tr><th>top-k</th><th>score</th></tr></thead><tbody id="topk">{rows}</tbody></table>
</section>"""


def _figures(view: View) -> str:
    fps = "–" if view.fps is None else f"{view.fps:.1f}"
    latency = "–" if view.latency_ms is None else f"{view.latency_ms:.1f} ms"
    model = ""
    if view.has_model:
        model = (f"<dt>backend</dt><dd id=backend>{escape(view.backend or '–')}</dd>"
                 f"<dt>bundle</dt><dd id=bundle>{escape(view.bundle_name or '–')}</dd>"
                 f"<dt>accuracy</dt><dd id=accuracy>{escape(view.accuracy or 'not recorded')}</dd>")
    return f"""<section class="figures"><dl>
<dt>fps</dt><dd id="fps">{fps}</dd><dt>latency p50</dt><dd id="latency">{latency}</dd>{model}
<dt>source</dt><dd id="source">{escape(view.source or "–")}</dd></dl></section>"""


def _monitor(view: View) -> str:
    if not view.has_model:
        return ""
    alarm = ("" if view.confidence_dropped else " hidden")
    rates = "".join(f"<tr><td>{escape(label)}</td><td>{rate:.1f}</td></tr>" for label, rate in view.rates.items())
    uncertain = "–" if view.uncertain_rate is None else f"{view.uncertain_rate * 100:.1f}%"
    return f"""<section class="monitor">
<p id="alarm" class="alarm"{alarm}>The model's confidence has dropped: the scene has changed and the model needs new data.
Save frames of the new scene (collect, review), train again and deploy.</p>
<dl><dt>uncertain</dt><dd id="uncertain">{uncertain}</dd><dt>mean top score</dt><dd id="mean-top">{_score(view.mean_top_score)}</dd></dl>
<table class="rates"><thead><tr><th>label</th><th>per minute</th></tr></thead><tbody id="rates">{rates}</tbody></table>
</section>"""


def live_page(view: View) -> str:
    body = f"""<main class="live">{_camera(view)}<aside>{_answer(view)}{_figures(view)}{_monitor(view)}</aside></main>"""
    return _page(view, "Live", "live", body, "live")


def collect_page(view: View, labels: Sequence[str], counts: dict[str, int], dataset: str) -> str:
    buttons = "".join(
        f'<button class="save" data-label="{escape(label)}" data-key="{KEYS[i] if i < len(KEYS) else ""}">'
        f'<kbd>{KEYS[i] if i < len(KEYS) else ""}</kbd> {escape(label)} <span class="count">{counts.get(label, 0)}</span></button>'
        for i, label in enumerate(labels))
    body = f"""<main class="live">{_camera(view)}<aside>{_answer(view)}
<section class="collect"><h2>Save the current frame as</h2><div id="buttons">{buttons}</div>
<p><label><input type="checkbox" id="burst"> burst of</label> <input id="burst-count" type="number" min="1" max="500" value="10"> frames,
one every <input id="burst-interval" type="number" min="0.05" step="0.05" value="0.5"> s</p>
<p id="saved" class="muted">Press a button or its key. Photos go to {escape(dataset)}/&lt;label&gt;/.</p></section>
{_figures(view)}</aside></main>"""
    return _page(view, "Collect", "collect", body, "collect")


def review_page(view: View, pending: Sequence[Pending], labels: Sequence[str], dataset: str, folder: str) -> str:
    cards = []
    for frame in pending:
        top = "".join(f"<li>{escape(label)} {score:.2f}</li>" for label, score in frame.top_k)
        buttons = "".join(f'<button class="sort" data-label="{escape(label)}">{escape(label)}</button>' for label in labels)
        cards.append(f"""<figure class="card" data-stem="{escape(frame.stem)}">
<img src="{escape(_q(view, f'/review/frames/{quote(frame.stem)}.jpg'))}" alt="{escape(frame.stem)}" loading="lazy">
<figcaption><div>guess <b>{escape(frame.guess or '?')}</b> {_score(frame.top_score)}</div><ol class="topk">{top}</ol>
<div class="buttons">{buttons}<button class="discard">discard</button></div></figcaption></figure>""")
    empty = "" if cards else f'<p class="muted">No uncertain frames waiting in {escape(folder)}.</p>'
    body = f"""<main class="review"><p class="muted">{len(cards)} frames the model was unsure about, from {escape(folder)}.
A click moves the frame into {escape(dataset)}/&lt;label&gt;/; discard removes it.</p>{empty}
<div id="cards">{''.join(cards)}</div></main>"""
    return _page(view, "Review", "review", body, "review")


def message_page(view: View, title: str, text: str) -> str:
    return _page(view, title, "", f'<main><p>{escape(text)}</p></main>', "message")

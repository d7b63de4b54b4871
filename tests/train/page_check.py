"""Read a report page in a real Chromium and check every number on it against the JSON file it names."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

# What the page shows of itself: every number in a data-src span, the files in data-file elements, and
# any text outside those spans (and outside code, labels and paths) that holds a digit.
COLLECT = """(() => {
  const nums = [...document.querySelectorAll('[data-src]')].map(e => [e.dataset.src, e.textContent, e.dataset.scale || null]);
  const files = Object.fromEntries([...document.querySelectorAll('[data-file]')].map(e => [e.dataset.file, e.textContent]));
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const stray = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement.closest('[data-src],[data-literal],code')) continue;
    if (/[0-9]/.test(node.textContent)) stray.push(node.textContent);
  }
  return {nums, files, stray};
})()"""

# Names that hold a digit but are no figure.
NAMES = re.compile(r"\b(u?int8|float32|top-1|F1|Grad-CAM)\b")


def resolve(data, pointer: str):
    """RFC 6901 JSON pointer."""
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def shown_equals(text: str, value, scale: str | None) -> bool:
    """Whether ``text`` (as printed: 12.34%, +0.56, 0.042, 1.00e-04, 632) is ``value`` rounded for display."""
    if value is None:
        return False
    value = float(value)
    if scale:
        value /= float(scale)
    if text.endswith("%"):
        text, value = text[:-1], value * 100
    if "e" in text:
        return math.isclose(float(text), value, rel_tol=0.01)
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-9


def check_numbers(collected: dict, expected_files: dict[str, Path]) -> int:
    """Every data-src number equals its file's value; returns how many were checked."""
    files = {name: Path(path) for name, path in collected["files"].items()}
    for name, path in expected_files.items():
        assert files.get(name) == Path(path), (name, files.get(name), path)
    loaded = {name: json.loads(path.read_text(encoding="utf-8")) for name, path in files.items()}
    wrong = []
    for src, text, scale in collected["nums"]:
        name, _, pointer = src.partition(":")
        try:
            value = resolve(loaded[name], pointer)
        except (KeyError, IndexError, ValueError) as exc:
            wrong.append((src, text, f"not in {name}: {exc!r}"))
            continue
        if not shown_equals(text, value, scale):
            wrong.append((src, text, value))
    assert not wrong, wrong[:10]
    stray = [t for t in collected["stray"] if re.search(r"\d", NAMES.sub("", t))]
    assert not stray, f"numbers on the page that come from no file: {stray[:10]}"
    return len(collected["nums"])

"""The device package's rooms depend on each other one way only, and never on the workstation side.

Read from the source files' import statements (every one, including the
imports inside functions that keep start-up fast), so a new upward import
fails here even if no test happens to execute it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgeclass.device

DEVICE = Path(edgeclass.device.__file__).parent
# Lowest first; a module may import its own room and the rooms below it.
LAYERS = {
    "errors": 0, "files": 0, "settings": 0,
    "bundle": 1,
    "pipeline": 2,
    "outputs": 3,
    "service": 4,
    "fleet": 5,
    "cli": 6, "bench": 6,
}
FORBIDDEN = ("tensorflow", "keras", "tf_keras", "edgeclass.train", "edgeclass.convert", "edgeclass.workflow")


def _modules() -> list[Path]:
    return sorted(DEVICE.rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(DEVICE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["edgeclass", "device", *parts])


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # "from . import systemd" names a module, not an attribute.
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                if candidate.startswith("edgeclass.device.") and _room(candidate) is not None:
                    found.append((node.lineno, candidate))
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["edgeclass", "device"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in LAYERS else None


def test_every_module_belongs_to_a_room():
    rooms = {_room(_dotted(p)) for p in _modules() if _dotted(p) != "edgeclass.device"}
    assert None not in rooms, "a module outside the known rooms: add it to LAYERS (and to device/__init__.py's map)"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(DEVICE)))
def test_imports_point_down_only(path):
    own = _room(_dotted(path))
    problems = []
    for line, module in _imports(path):
        if module.split(".")[0] in FORBIDDEN or any(module == f or module.startswith(f + ".") for f in FORBIDDEN):
            problems.append(f"line {line}: imports {module} (the device never needs the workstation side)")
            continue
        target = _room(module)
        if own is None or target is None:
            continue
        if LAYERS[target] > LAYERS[own]:
            problems.append(f"line {line}: {own} imports {module}, a room above it")
    assert problems == []


def test_no_cycles_between_rooms():
    edges: dict[str, set[str]] = {}
    for path in _modules():
        own = _room(_dotted(path))
        for _, module in _imports(path):
            target = _room(module)
            if own and target and target != own:
                edges.setdefault(own, set()).add(target)

    def reachable(start: str, seen: set[str]) -> set[str]:
        for nxt in edges.get(start, ()):
            if nxt not in seen:
                seen.add(nxt)
                reachable(nxt, seen)
        return seen

    assert [room for room in edges if room in reachable(room, set())] == []

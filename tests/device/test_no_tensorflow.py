"""The device side never imports TensorFlow or Keras (the Pi installs edgeclass[device] only)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("tensorflow", "keras", "tf_keras", "matplotlib")


def _modules_after(code: str) -> set[str]:
    probe = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        print(json.dumps(sorted(sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_importing_every_device_module_loads_no_tensorflow():
    modules = _modules_after("""
        import pkgutil, importlib, edgeclass.device as d
        for info in pkgutil.walk_packages(d.__path__, "edgeclass.device."):
            if not info.name.endswith(".__main__"):  # that one runs the command
                importlib.import_module(info.name)
        import edgeclass.train.cli, edgeclass.device.cli
    """)
    assert "edgeclass.device.cli" in modules
    assert _heavy(modules) == []


def test_running_device_commands_loads_no_tensorflow(colour_bundle, tmp_path):
    from .conftest import colour_frame

    import cv2

    image = tmp_path / "red.png"
    cv2.imwrite(str(image), cv2.cvtColor(colour_frame("red"), cv2.COLOR_RGB2BGR))
    dataset = tmp_path / "dataset"
    (dataset / "red").mkdir(parents=True)
    cv2.imwrite(str(dataset / "red" / "red.png"), cv2.cvtColor(colour_frame("red"), cv2.COLOR_RGB2BGR))
    modules = _modules_after(f"""
        import sys
        from edgeclass.device.cli import app
        for argv in (["predict", "-b", {str(colour_bundle)!r}, {str(image)!r}],
                     ["bundle", "info", {str(colour_bundle)!r}, "--verify"],
                     ["bundle", "evaluate", {str(colour_bundle)!r}, {str(dataset)!r}, "--json"],
                     ["run", "-b", {str(colour_bundle)!r}, "-s", {str(tmp_path)!r}, "--max-frames", "1"]):
            try:
                app(argv, standalone_mode=False)
            except SystemExit:
                pass
    """)
    assert "edgeclass.device.pipeline.classifier" in modules and "edgeclass.device.pipeline.loop" in modules
    assert "edgeclass.device.pipeline.evaluate" in modules
    assert _heavy(modules) == []

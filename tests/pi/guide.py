"""The README's Raspberry Pi guide as data: every command it tells a user to type, in order.

The guide is the part of README.md from "## Raspberry Pi guide" up to "### The
live page"; its ``sh`` blocks are the commands (a trailing ``# comment`` is
the reader's, not the shell's), its ``toml`` block the rehearsal's camera.
"""

from __future__ import annotations

import re
from pathlib import Path

from .container import REPO

README = REPO / "README.md"
GUIDE_START, GUIDE_END = "## Raspberry Pi guide", "### The live page"
README_HOST = "pi@raspberrypi.local"


def guide_text(readme: Path = README) -> str:
    text = readme.read_text(encoding="utf-8")
    start = text.index(GUIDE_START)
    return text[start:text.index(GUIDE_END, start)]


def guide_blocks(kind: str = "sh", readme: Path = README) -> list[str]:
    """The guide's fenced blocks of one kind, in order."""
    return re.findall(rf"^```{kind}\n(.*?)^```$", guide_text(readme), flags=re.S | re.M)


def guide_commands(readme: Path = README) -> list[str]:
    """Every command line of the guide's sh blocks, in order, without the reader's comments."""
    commands = []
    for block in guide_blocks("sh", readme):
        for line in block.splitlines():
            command = re.sub(r"\s{2,}#.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


def rehearsal_source(readme: Path = README) -> str:
    """The guide's ``[source]`` snippet that makes a video file the camera."""
    (block,) = [b for b in guide_blocks("toml", readme) if b.startswith("[source]")]
    return block

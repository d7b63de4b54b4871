"""Rich progress bars on stderr for the long steps (scan, epochs, evaluation).

Library code calls :func:`progress_bar` and gets an ``advance`` function; on a
terminal it draws a live bar, otherwise (CI logs, journald) rich prints only
the finished bar, so logs stay readable.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


def _console():
    from rich.console import Console

    return Console(stderr=True)


def make_progress(*extra_columns):
    """A rich Progress with the columns every edgeclass bar uses, plus ``extra_columns``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=_console(),
    )


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Context manager yielding ``advance(n=1)`` for a bar of ``total`` steps."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)

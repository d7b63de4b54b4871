"""Progress reporting for long conversion steps, without tying the library to a terminal.

Library functions take a ``progress`` callable: ``progress(description, total)``
returns a context manager that yields ``advance(n=1)``. The CLI passes
:func:`rich_progress` (bars on stderr); tests and library callers get
:func:`no_progress` by default.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

Advance = Callable[..., None]
Progress = Callable[[str, int], ContextManager[Advance]]


@contextlib.contextmanager
def no_progress(description: str, total: int) -> Iterator[Advance]:
    """A progress reporter that reports nothing."""
    yield lambda n=1: None


def rich_progress(console=None) -> Progress:
    """A reporter drawing one rich progress bar per step (rich comes with typer)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)

    @contextlib.contextmanager
    def progress(description: str, total: int) -> Iterator[Advance]:
        with RichProgress(
            TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    return progress

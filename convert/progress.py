"""Progress reporting for long conversion steps, without tying the library to a terminal.

Library functions take a ``progress`` callable: ``progress(description, total)``
returns a context manager that yields ``advance(n=1)``. That is the shape of
:func:`edgeclass.train.progress.progress_bar`, which the CLI passes (rich bars
on stderr, the same look as training); library callers and tests get
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

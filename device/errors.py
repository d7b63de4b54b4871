"""User-facing errors: each carries one line that names the file and the problem.

The CLI prints ``str(error)`` and exits non-zero without a traceback; anything
that is not an :class:`EdgeclassError` is a bug and keeps its traceback.
"""

import re

# C0/C1 control characters: text read from a bundle (labels, its name) or any
# other file must not move a terminal's cursor or change its colours.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters replaced by ``?``, safe to print on a terminal."""
    return _CONTROL.sub("?", str(text))


class EdgeclassError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class BundleError(EdgeclassError):
    """A bundle directory is missing a file, or a file does not match the manifest."""


class ModelError(EdgeclassError):
    """A TFLite model cannot be loaded or run by any available interpreter."""


class SourceError(EdgeclassError):
    """A frame source cannot be opened, or stopped delivering frames for good."""


class SourceMissing(SourceError):
    """A frame source that does not exist (yet): a camera not plugged in, a path not there.

    Unlike a file that exists but cannot be read, it may appear by itself (a
    USB camera enumerating at boot, a udev link, a share being mounted), so a
    run that waits for its source retries it.
    """


class ImageError(EdgeclassError):
    """A file is not a readable image."""


def parse_choice(enum_cls, value: str, option: str):
    """``enum_cls(value)``, or an :class:`EdgeclassError` naming the option and its choices."""
    try:
        return enum_cls(value)
    except ValueError:
        raise EdgeclassError(f"{option} is {value!r}, expected one of {', '.join(e.value for e in enum_cls)}") from None

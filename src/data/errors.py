"""The library's data errors: one line naming the file and what to do (README "Troubleshooting").

`DataError` is a `ValueError`, so `src.utils.cli.readable_errors` prints it as one `error: ...` line.
Raised inside a DataLoader worker, torch re-raises it in the main process by calling the class with its
own text, `DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...")`: the
constructor recognises that text and keeps the worker's original message as the message (the worker's
traceback stays in ``worker_traceback`` and in a note, which a full traceback prints), so the error
reads the same in the main process as in the worker. `worker_message` does the same for other exception
types (`src.utils.cli.one_line`).
"""

from __future__ import annotations

import re
from pathlib import Path

_WORKER_ERROR = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*: ")


def worker_message(text: str) -> str | None:
    """The original message of an exception torch re-raised from a DataLoader worker ("Caught X in
    DataLoader worker process N. Original Traceback ... pkg.X: message"), or None for any other text."""
    if not _WORKER_ERROR.match(text):
        return None
    lines = text.splitlines()
    for j in range(len(lines) - 1, 0, -1):  # the last unindented "pkg.Type: message" line of the traceback
        if _EXCEPTION_LINE.match(lines[j]):
            return "\n".join([lines[j].split(": ", 1)[1], *lines[j + 1 :]])
    return None


class DataError(ValueError):
    """Bad input data (an image, a label, a classes file); the message names the file and the fix."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        original = worker_message(message) if isinstance(message, str) else None
        self.worker_traceback = message if original is not None else None
        super().__init__(original if original is not None else message)
        self.path = None if path is None else str(path)
        add_note = getattr(self, "add_note", None)  # Python >= 3.11; 3.10 goes without the note
        if original is not None and add_note is not None:  # a full traceback shows the worker's
            add_note(message)


class DataReadError(DataError, OSError):
    """A file that cannot be read or decoded (missing, empty, truncated, corrupt); also an `OSError`."""

"""JSON-lines sink: one ``Estimate.to_json()`` per line to stdout or a file, flushed after every line."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, TextIO


class JsonLinesSink:
    """``publish(event)`` writes ``event.to_json()`` and a newline, then flushes; thread-safe.

    ``out``: None for stdout, a path (created or truncated), or an open text stream (not closed by
    ``close()``). A reader that goes away (``BrokenPipeError``, e.g. ``| head``) silences the sink
    instead of raising on the runtime's worker thread; ``broken`` tells.
    """

    def __init__(self, out: TextIO | Path | str | None = None) -> None:
        self._owned = isinstance(out, str | Path)
        if isinstance(out, str | Path):
            path = Path(out)
            if path.parent and not path.parent.exists():
                raise FileNotFoundError(f"{path}: the directory {path.parent} does not exist")
            self._out: TextIO = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        else:
            self._out = out if out is not None else sys.stdout
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.n_lines = 0
        self.broken = False

    def publish(self, event: Any) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            if self.broken or self._out.closed:
                return
            try:
                self._out.write(line)
                self._out.flush()
                self.n_lines += 1
            except BrokenPipeError:
                self.broken = True

    def close(self) -> None:
        with self._lock:
            if self._out.closed:
                return
            try:
                self._out.flush()
            except (BrokenPipeError, ValueError):
                self.broken = True
            if self._owned:
                self._out.close()

    def __enter__(self) -> JsonLinesSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

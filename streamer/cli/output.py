"""Where a command's estimates go: the terminal dashboard, or JSON lines with ``--json``.

``open_output`` picks one; the command then talks to an ``Output`` only: ``sink`` goes to the
runtime, ``level`` shows the input level, ``status`` a status line, ``error`` a window error, and
``close`` ends it. The JSON-lines output has no screen: levels and statuses are dropped, errors go
to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

import numpy as np

from emostream.streamer.core.events import ErrorEvent
from emostream.streamer.sinks.base import Sink

if TYPE_CHECKING:
    from emostream.streamer.runtime.runtime import Runtime
    from emostream.streamer.sinks.dashboard import Dashboard


class Output:
    """JSON lines (or any sink without a screen): errors to stderr."""

    def __init__(self, sink: Sink, prog: str) -> None:
        self.sink = sink
        self.prog = prog

    def open(self) -> None:
        pass

    def level(self, stream: str, block: np.ndarray) -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def error(self, event: ErrorEvent) -> None:
        print(f"{self.prog}: {event.code}: {event.message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.sink.close()


class DashboardOutput(Output):
    """The live terminal dashboard: levels, statuses and errors on screen."""

    def __init__(self, dashboard: Dashboard, prog: str) -> None:
        super().__init__(dashboard, prog)
        self.dashboard = dashboard

    def open(self) -> None:
        self.dashboard.start()

    def level(self, stream: str, block: np.ndarray) -> None:
        self.dashboard.note_level(stream, block)

    def status(self, text: str) -> None:
        self.dashboard.set_status(text)

    def error(self, event: ErrorEvent) -> None:
        self.dashboard.set_status(f"{event.code}: {event.message}")


def open_output(
    args: argparse.Namespace, runtime: Runtime, source: str, prog: str, out: TextIO | None = None
) -> Output:
    """JSON lines on stdout with ``--json``, else the dashboard; added to the runtime's sinks."""
    output: Output
    if getattr(args, "json", False):
        from emostream.streamer.sinks.jsonl import JsonLinesSink

        output = Output(JsonLinesSink(out), prog)
    else:
        from emostream.streamer.sinks.dashboard import Dashboard

        dashboard = Dashboard(
            runtime.labels,
            runtime.model_name,
            source,
            runtime.sample_rate_hz,
            runtime.window_s,
            runtime.hop_s,
        )
        output = DashboardOutput(dashboard, prog)
    runtime.add_sink(output.sink)
    return output

"""Capacity: the most concurrent real-time streams a server keeps up with, found by search.

A trial runs N streams and passes when the p99 latency is at most the bound, no audio is dropped and
no estimate is missing (``LoadResult.problems``). ``search_capacity`` is the pure search, exponential
(N = start, start*growth, ...) until a trial fails, then bisection between the last pass and the
first fail until the gap is within ``rel_tol``; ``run_capacity`` drives it with real trials. With
``confirm_failures`` (what ``python -m benchmarks`` and ``benchmarks.scale`` use outside --quick) a failing N is run
again and fails only when the second trial fails too: on a shared 2-core VM one trial in a dozen
stalled for a moment with no relation to N (2026-12-03: silero failed at 256 streams with p99
1.5 s, then passed at 272 and 320 in fixed-load runs), and a single such trial set the capacity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emostream.benchmarks.e2e import LoadResult, run_load
from emostream.benchmarks.serverproc import ServerProcess


@dataclass(frozen=True, slots=True)
class Trial:
    """One trial at ``n`` streams: whether it kept up, its latency, and the full summary."""

    n: int
    ok: bool
    p50_ms: float
    p99_ms: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "ok": self.ok, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, **self.detail}


@dataclass(frozen=True, slots=True)
class SearchSettings:
    """Where the search starts, how fast it grows, where it stops, and how many trials it may spend."""

    start: int = 1
    growth: float = 2.0
    max_n: int = 4096
    rel_tol: float = 0.05
    max_trials: int = 20
    confirm_failures: bool = False  # a failing n is tried once more; it fails only if that fails too

    def __post_init__(self) -> None:
        if self.start < 1 or self.growth <= 1.0 or self.max_n < self.start or self.max_trials < 1:
            raise ValueError("need start >= 1, growth > 1, max_n >= start and max_trials >= 1")


@dataclass(frozen=True, slots=True)
class SearchResult:
    capacity: int  # largest n that passed (0: not even ``start``)
    first_fail: int | None  # smallest n that failed above it (None: none failed up to max_n)
    trials: tuple[Trial, ...]

    @property
    def bounded(self) -> bool:
        """True when a failing n was found, i.e. the capacity is measured rather than a lower bound."""
        return self.first_fail is not None


def search_capacity(trial: Callable[[int], Trial], settings: SearchSettings | None = None) -> SearchResult:
    """Largest n with ``trial(n).ok``, assuming (not checking) that passing is monotone in n.

    Exponential phase: start, ceil(start*growth), ... capped at ``max_n``, until a failure. Bisection
    phase: between the largest pass ``lo`` and smallest fail ``hi`` until ``hi - lo <= max(1, rel_tol*lo)``.
    At most ``max_trials`` trials in all; with fewer, the result is the best found so far.
    """
    cfg = settings or SearchSettings()
    trials: list[Trial] = []

    def passes(n: int) -> bool:
        t = trial(n)
        trials.append(t)
        if not t.ok and cfg.confirm_failures and len(trials) < cfg.max_trials:
            t = trial(n)  # a one-off stall (another process, a page fault storm) is not the capacity
            trials.append(t)
        return t.ok

    lo, hi = 0, None
    n = cfg.start
    while len(trials) < cfg.max_trials:
        if not passes(n):
            hi = n
            break
        lo = n
        if n >= cfg.max_n:
            break
        n = min(cfg.max_n, max(n + 1, math.ceil(n * cfg.growth)))
    while hi is not None and hi - lo > max(1, math.floor(cfg.rel_tol * lo)) and len(trials) < cfg.max_trials:
        mid = (lo + hi) // 2
        if passes(mid):
            lo = mid
        else:
            hi = mid
    return SearchResult(capacity=lo, first_fail=hi, trials=tuple(trials))


def run_capacity(
    server: ServerProcess,
    *,
    hop_s: float,
    trial_s: float,
    max_p99_ms: float,
    frame_ms: float = 20.0,
    ramp_s: float = 0.0,
    client_procs: int | None = None,
    search: SearchSettings | None = None,
    known: Mapping[int, LoadResult] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The search against a running server; before each trial the server is left to go idle.

    ``known`` holds runs already made (e.g. the single-stream run as n=1): they count as trials.
    """

    def trial(n: int) -> Trial:
        t0 = time.monotonic()
        if known and n in known:
            res = known[n]
        else:
            if not server.alive():
                log(f"  {server.name}: the server died; restarting it")
                server.start()
            server.wait_idle()
            res = run_load(server, n, duration_s=ramp_s + trial_s, hop_s=hop_s, frame_ms=frame_ms,
                           client_procs=client_procs, prefix=f"cap{n}", max_p99_ms=max_p99_ms, ramp_s=ramp_s)
        summary = res.summary(max_p99_ms)
        if not server.alive():
            summary["problems"].append("server died")
            summary["ok"] = False
        lat = res.latency()
        t = Trial(n=n, ok=summary["ok"], p50_ms=max(lat["server_p50_ms"], lat["client_p50_ms"]),
                  p99_ms=res.p99_ms(), detail=summary)
        log(f"  {server.name}: {n:5d} streams: p50 {t.p50_ms:7.1f} ms, p99 {t.p99_ms:7.1f} ms, server CPU "
            f"{res.server_cpu_cores:.2f} cores, client CPU {res.client_cpu_cores:.2f} cores, "
            f"{'ok' if t.ok else 'FAIL: ' + '; '.join(summary['problems'])} ({time.monotonic() - t0:.0f} s)"
            f"{' [a load-generator process saturated its core: use more --client-procs]' if summary['client_saturated'] else ''}")
        return t

    found = search_capacity(trial, search)
    at = next((t for t in found.trials if t.ok and t.n == found.capacity), None)
    return {
        "capacity_streams": found.capacity,
        "bounded": found.bounded,
        "first_fail_streams": found.first_fail,
        "criterion": f"p99 latency (server and client) <= {max_p99_ms:g} ms, no audio dropped, no estimate missing",
        "trial_s": trial_s,
        "ramp_s": ramp_s,
        "frame_ms": frame_ms,
        "server_cpu_cores_at_capacity": at.detail["server_cpu_cores"] if at else None,
        "client_cpu_cores_at_capacity": at.detail["client_cpu_cores"] if at else None,
        "client_procs_at_capacity": at.detail["client_procs"] if at else None,
        "client_saturated_in_any_trial": any(t.detail.get("client_saturated", False) for t in found.trials),
        "machine_cpu_cores_at_capacity": at.detail["machine_cpu_cores"] if at else None,
        "p99_ms_at_capacity": at.p99_ms if at else None,
        "trials": [t.to_dict() for t in found.trials],
    }

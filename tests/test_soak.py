"""The soak's verdict: every fault must get its documented reaction, every healthy estimate must arrive.

The verdict logic is checked on made-up results (no server); one real server with a short idle
timeout shows a fault answered as documented and one answered otherwise being told apart.
"""

from __future__ import annotations

import asyncio
from typing import Any

from emostream.benchmarks.faults import EXPECTED, FaultLimits, fault_stall, unanswered
from emostream.benchmarks.serverproc import ServerProcess, serve_command
from emostream.benchmarks.soak import soak_problems


def _result(**changes: Any) -> dict[str, Any]:
    faults = {name: {outcome: 3} for name, outcome in EXPECTED.items()}
    r: dict[str, Any] = {
        "healthy_streams": 4, "bad_clients": 1, "unfinished_tasks": 0,
        "estimates_expected": 40, "estimates_received": 40, "streams_complete": 4,
        "healthy_errors": {}, "faults": faults, "faults_unanswered": unanswered(faults), "server_exit_code": 0,
    }
    r.update(changes)
    return r


def test_every_documented_reaction_passes() -> None:
    assert unanswered({name: {outcome: 2} for name, outcome in EXPECTED.items()}) == {}
    assert soak_problems(_result()) == []


def test_an_unanswered_fault_fails_the_soak() -> None:
    faults = {"stall": {"idle_timeout/1008": 5, "not_closed_in_15s/-": 1}, "slow_subscriber": {"no_lag/-": 2},
              "too_fast": {"throttled/1000": 4}, "nan": {"client:TimeoutError": 1}}
    wrong = unanswered(faults)
    assert wrong == {"stall": {"not_closed_in_15s/-": 1}, "slow_subscriber": {"no_lag/-": 2},
                     "nan": {"client:TimeoutError": 1}}
    problems = soak_problems(_result(faults=faults, faults_unanswered=wrong))
    assert len(problems) == 3 and all(p.startswith("fault ") for p in problems)
    assert any("expected lag/-" in p for p in problems)


def test_lost_estimates_errors_and_exit_code_fail_the_soak() -> None:
    assert any("1 of 40 estimates" in p for p in soak_problems(_result(estimates_received=39, streams_complete=3)))
    assert soak_problems(_result(healthy_errors={"ConnectionClosedError": 1}))
    assert soak_problems(_result(server_exit_code=1))
    assert soak_problems(_result(faults={}, faults_unanswered={}))  # bad clients that tried nothing


def test_a_real_stall_is_judged_against_the_documented_idle_timeout() -> None:
    """A real server with a 2-s idle timeout: a stall expecting 2 s is answered as documented; one
    expecting 4 s sees the close too early, and the soak's verdict catches it."""
    cmd = serve_command("--model", "default", "--no-vad", "--limit-idle-timeout-s", "2")
    with ServerProcess(cmd) as server:
        right = asyncio.run(fault_stall(server.url, FaultLimits(idle_timeout_s=2.0)))
        wrong = asyncio.run(fault_stall(server.url, FaultLimits(idle_timeout_s=4.0)))
    assert right == EXPECTED["stall"] == "idle_timeout/1008"
    assert wrong == "idle_timeout_too_early/1008"
    assert unanswered({"stall": {right: 1, wrong: 1}}) == {"stall": {wrong: 1}}

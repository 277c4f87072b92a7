"""The machine a benchmark ran on, its measured fp32 matmul peak, and the timing helpers every benchmark uses."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """Seconds -> ``{"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"}`` (NaN-free; empty -> zeros, n=0)."""
    if not samples_s:
        return {"n": 0, "p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0, "max_ms": 0.0}
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {
        "n": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "max_ms": float(a.max()),
    }


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall-clock timing covers it; a no-op on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass(frozen=True, slots=True)
class Repeats:
    """How a timing repeats: ``warmup`` untimed calls, then at least ``min_repeats`` and at most
    ``max_repeats`` timed ones, stopping after ``min_repeats`` once ``budget_s`` seconds were timed."""

    warmup: int
    min_repeats: int
    max_repeats: int
    budget_s: float

    @classmethod
    def pick(cls, quick: bool, *, warmup: int = 3, full: tuple[int, int, float] = (20, 1000, 2.0),
             smoke: tuple[int, int, float] = (5, 50, 0.3)) -> Repeats:
        return cls(warmup, *(smoke if quick else full))


def time_calls(fn: Callable[[], Any], reps: Repeats, device: str = "cpu") -> list[float]:
    """Seconds per call of ``fn``, timed as ``reps`` says (GPU work synchronised before each clock read)."""
    for _ in range(reps.warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < reps.max_repeats and (len(times) < reps.min_repeats or spent < reps.budget_s):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return times


@dataclass(frozen=True, slots=True)
class Machine:
    """What the figures were measured on; ``load_1min`` shows whether something else was running."""

    cpu_model: str
    logical_cores: int
    physical_cores: int | None
    torch_threads: int
    torch_version: str
    onnxruntime_version: str | None
    numpy_version: str
    python_version: str
    os: str
    cuda_devices: tuple[str, ...]
    load_1min: float
    load_5min: float
    memory_gib: float | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cuda_devices"] = list(self.cuda_devices)
        return d

    def one_line(self) -> str:
        gpus = ", ".join(self.cuda_devices) if self.cuda_devices else "no CUDA GPU"
        return (
            f"{self.cpu_model}, {self.logical_cores} logical cores (torch threads {self.torch_threads}), "
            f"{gpus}; {self.os}; Python {self.python_version}, torch {self.torch_version}, "
            f"onnxruntime {self.onnxruntime_version or 'absent'}, numpy {self.numpy_version}; "
            f"load average {self.load_1min:.2f} (1 min) / {self.load_5min:.2f} (5 min) at start"
        )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
                    return f"{distro}, {platform.system()} {platform.release()}"
    except OSError:
        pass
    return platform.platform()


def describe_machine() -> Machine:
    try:
        import onnxruntime

        ort_version: str | None = onnxruntime.__version__
    except ImportError:
        ort_version = None
    physical: int | None = None
    memory_gib: float | None = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    gpus: tuple[str, ...] = ()
    if torch.cuda.is_available():
        gpus = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    load1, load5, _ = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return Machine(
        cpu_model=_cpu_model(),
        logical_cores=os.cpu_count() or 1,
        physical_cores=physical,
        torch_threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        onnxruntime_version=ort_version,
        numpy_version=np.__version__,
        python_version=platform.python_version(),
        os=_os_name(),
        cuda_devices=gpus,
        load_1min=round(load1, 2),
        load_5min=round(load5, 2),
        memory_gib=memory_gib,
    )


def matmul_peak_gflops(device: str = "cpu", size: int = 2048, repeats: int = 8, warmup: int = 1,
                       threads: int | None = None) -> dict[str, Any]:
    """The fp32 ``torch.mm`` rate of one ``size`` x ``size`` product, best of ``repeats``; on the CPU with
    ``threads`` torch threads (None: all, torch's default).

    The best (not the median) is the peak: on a shared machine the slower runs measure the neighbours.
    """
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    out = torch.empty(size, size, device=device)
    default_threads = torch.get_num_threads()
    if threads and device == "cpu":
        torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        times = time_calls(lambda: torch.mm(a, b, out=out), Repeats(warmup, repeats, repeats, 0.0), device)
    finally:
        torch.set_num_threads(default_threads)
    flop = 2.0 * size**3
    return {
        "device": device,
        "size": size,
        "threads": used_threads,
        "repeats": repeats,
        "peak_gflops": flop / min(times) / 1e9,
        "median_gflops": flop / statistics.median(times) / 1e9,
    }


def devices_present(wanted: str | None = None) -> list[str]:
    """``["cpu"]`` plus ``"cuda"`` when torch sees a GPU; ``wanted`` restricts to one (raising if absent)."""
    present = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if wanted is None:
        return present
    if wanted not in present:
        raise SystemExit(f"benchmarks: --device {wanted} asked for, but this machine offers only {', '.join(present)}")
    return [wanted]

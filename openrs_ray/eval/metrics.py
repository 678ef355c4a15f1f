"""Evaluation estimators: pure functions of per-sample correctness (1.0 correct, 0.0 wrong).

`correct[i][j]` is sample j of problem i, in sampling order.
- pass@1: mean correctness of each problem's first sample (Open-RS's single-sample number).
- avg@k: mean over problems of the per-problem mean over its k samples. Its standard error is the sample
  standard deviation (n - 1 in the denominator) of the n per-problem means, divided by sqrt(n): the spread of
  the benchmark score over problems, which is what limits comparisons between checkpoints.
- pass@k (unbiased, Chen et al. 2021): per problem with n samples of which c are correct,
  1 - C(n - c, k) / C(n, k), the chance that k samples drawn without replacement hold a correct one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

Correctness = Sequence[Sequence[float]]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct out of `n` samples.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i), which equals 1 - C(n-c, k) / C(n, k) without the huge
    binomials (C(1024, 512) overflows a float).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k samples holds a correct one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _check(correct: Correctness) -> None:
    if not correct or any(not row for row in correct):
        raise ValueError("need at least one problem, each with at least one sample")


def first_sample_accuracy(correct: Correctness) -> float:
    """pass@1: mean correctness of each problem's first sample."""
    _check(correct)
    return statistics.fmean(row[0] for row in correct)


def avg_at_k(correct: Correctness) -> tuple[float, float | None]:
    """avg@k and its standard error (std of the per-problem means / sqrt(n); None for a single problem)."""
    _check(correct)
    means = [statistics.fmean(row) for row in correct]
    stderr = statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else None
    return statistics.fmean(means), stderr


def mean_pass_at_k(correct: Correctness, k: int) -> float:
    """Unbiased pass@k averaged over problems (each problem's own sample count is its n)."""
    _check(correct)
    return statistics.fmean(pass_at_k(len(row), round(sum(row)), k) for row in correct)


def benchmark_metrics(correct: Correctness, num_samples: int, ks: Sequence[int]) -> dict[str, float | None]:
    """Every metric of one benchmark, keyed as in the report: pass@1, avg@K, avg@K_stderr, pass@k for k in ks."""
    avg, stderr = avg_at_k(correct)
    out: dict[str, float | None] = {
        "pass@1": first_sample_accuracy(correct),
        f"avg@{num_samples}": avg,
        f"avg@{num_samples}_stderr": stderr,
    }
    for k in ks:
        out[f"pass@{k}"] = mean_pass_at_k(correct, k)
    return out


def average_metrics(per_benchmark: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """Unweighted mean of each metric over benchmarks (each benchmark counts once, as Open-RS's "Avg").

    A standard error of the average combines the benchmarks' as independent: sqrt(sum se_b^2) / B; it is None
    when any benchmark has none.
    """
    if not per_benchmark:
        raise ValueError("no benchmark to average")
    rows = list(per_benchmark.values())
    out: dict[str, float | None] = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if key.endswith("_stderr"):
            known = [v for v in values if v is not None]
            out[key] = math.sqrt(sum(v * v for v in known)) / len(values) if len(known) == len(values) else None
        else:
            out[key] = statistics.fmean(float(v) for v in values)  # type: ignore[arg-type]  # only stderrs are None
    return out

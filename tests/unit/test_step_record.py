"""StepRecord: the typed step record writes the metrics.jsonl lines runs always wrote, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrs_ray.config import load_config
from openrs_ray.records.runlog import RunFolder
from openrs_ray.step_record import FlowCounters, RolloutStats, StepRecord, SupervisedCounters
from openrs_ray.types import Prompt, Rollout, ScoredGroup
from tests.conftest import REPO

COST = {"gpu_hours/generator": 0.0, "cpu_hours/generator": 0.5, "gpu_hours": 0.0, "cpu_hours": 0.5, "cost_dollars": 0.1}
LEARN = {"nonfinite_updates": 0.0, "loss": -0.5, "clip_ratio": 0.0, "grad_norm": 1.5, "lr": 1e-6}
# An rl line exactly as Orchestrator._metrics built it (dict literal, in its key order), then placement and eval
# as the runner added them.
RL_LINE = {
    "step": 3, "weight_version": 3, "reward_mean": 0.5, "reward_std": 0.5, "accuracy_mean": 0.5,
    "completion_tokens": 6, "completion_length_mean": 2.0, "truncated_ratio": 0.25, "reward/accuracy": 0.5,
    "reward/language": 0.0, "language_drift_rate": 0.25,
    "time_scale_s": 0.1, "time_generate_s": 1.0, "time_verify_s": 0.5, "time_refill_s": 0.0, "time_learn_s": 2.0,
    "time_broadcast_s": 0.25, "time_step_s": 4.0,
    **LEARN, "sync_s": 0.25, "sync_bytes": 1024.0, "staleness_mean": 0.0, "staleness_max": 0.0,
    "staleness_hist": {"0": 4}, "groups_trained": 2, "nonfinite_skipped_total": 0, "dropped_unparsable": 1,
    "dropped_stale": 0, "dropped_zero_variance": 3, "refill_rounds": 1, "dropped_too_long": 2, "verify_timeouts": 0,
    "verify_group_timeouts": 0, "verify_errors": 1, "verifier_restarts": 0, "generator_restarts": 0,
    "nodes_lost": 0, "num_engines": 2, "generator_target": 2,
    "generator_scale_reason": "fixed", **COST, "prompt_uids": ["d:0", "d:1"],
    "placement": {"learners": [{"node": "a"}]},
    "eval/average/avg@1": 0.5,
}  # fmt: skip
SFT_LINE = {
    "step": 1, "stage": "sft", "nonfinite_updates": 0.0, "nll": 2.25, "grad_norm": 3.0, "lr": 1e-5,
    "time_teacher_s": 0.01, "time_step_s": 1.5, "epoch": 0, "dropped_too_long": 0, "dropped_malformed": 1,
    **COST, "prompt_uids": ["f:0"],
}  # fmt: skip


def _groups() -> list[ScoredGroup]:
    """Two groups of two: rewards 1, 0 | 1, 0; lengths 1, 2 | 3, 0; one truncated; one language drift."""

    def rollout(n: int, finish: str = "stop") -> Rollout:
        return Rollout("p", [1], [7] * n, "x", [0.0] * n, finish, 0, 3)

    prompt = Prompt("d:0", "q", [1], "4")
    a = ScoredGroup(
        prompt, [rollout(1), rollout(2, "length")], [1.0, 0.0], {"accuracy": [1.0, 0.0], "language": [0.0, -1.0]}
    )
    b = ScoredGroup(prompt, [rollout(3), rollout(0)], [1.0, 0.0], {"accuracy": [1.0, 0.0], "language": [0.5, 0.5]})
    return [a, b]


def test_rollout_stats_hand_values() -> None:
    stats = RolloutStats.of(_groups())
    assert (stats.reward_mean, stats.reward_std, stats.accuracy_mean) == (0.5, 0.5, 0.5)
    assert (stats.completion_tokens, stats.completion_length_mean, stats.truncated_ratio) == (6, 1.5, 0.25)
    assert stats.components == {"accuracy": 0.5, "language": 0.0}  # language: (0 - 1 + 0.5 + 0.5) / 4
    assert stats.language_drift_rate == 0.25  # one of four below zero
    empty = RolloutStats.of([])
    assert empty.to_dict() == {
        "reward_mean": 0.0, "reward_std": 0.0, "accuracy_mean": 0.0, "completion_tokens": 0,
        "completion_length_mean": 0.0, "truncated_ratio": 0.0,
    }  # fmt: skip


def _rl_record() -> StepRecord:
    phases = {"scale": 0.1, "generate": 1.0, "verify": 0.5, "refill": 0.0, "learn": 2.0, "broadcast": 0.25, "step": 4.0}
    rollout = RolloutStats(0.5, 0.5, 0.5, 6, 2.0, 0.25, {"accuracy": 0.5, "language": 0.0}, 0.25)
    flow = FlowCounters(2, 0, 1, 0, 3, 1, 2, 0, 0, 1, 0, 0, 0, 2, 2, "fixed")
    staleness = {"staleness_mean": 0.0, "staleness_max": 0.0, "staleness_hist": {"0": 4}}
    record = StepRecord(
        step=3, prompt_uids=["d:0", "d:1"], phases=phases, learner=dict(LEARN), cost=dict(COST), weight_version=3,
        rollout=rollout, sync={"sync_s": 0.25, "sync_bytes": 1024.0}, staleness=staleness, flow=flow,
    )  # fmt: skip
    record.placement = {"learners": [{"node": "a"}]}
    record.evaluation.update({"eval/average/avg@1": 0.5})
    return record


def test_rl_line_is_byte_identical() -> None:
    assert json.dumps(_rl_record().to_dict()) == json.dumps(RL_LINE)


def test_supervised_line_is_byte_identical() -> None:
    record = StepRecord(
        step=1, prompt_uids=["f:0"], learner={"nonfinite_updates": 0.0, "nll": 2.25, "grad_norm": 3.0, "lr": 1e-5},
        stage="sft", phases={"teacher": 0.01, "step": 1.5}, cost=dict(COST), supervised=SupervisedCounters(0, 0, 1),
    )  # fmt: skip
    assert json.dumps(record.to_dict()) == json.dumps(SFT_LINE)
    assert "placement" not in record and "weight_version" not in record


def test_a_record_reads_as_its_line() -> None:
    record = _rl_record()
    assert record["reward/language"] == 0.0 and record.get("kl") is None and record.get("num_engines") == 2
    assert dict(record) == RL_LINE and list(record) == list(RL_LINE) and len(record) == len(RL_LINE)
    with pytest.raises(KeyError):
        record["nll"]


def test_run_folder_writes_a_record_as_its_dict(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    run = RunFolder(load_config(REPO / "configs/smoke.yaml", [f"output_dir={tmp_path / 'run'}", f"data.path={data}"]))
    run.log(_rl_record())
    run.log(RL_LINE)
    run.close()
    assert run.metrics_path.read_text() == 2 * (json.dumps(RL_LINE) + "\n")


def test_prometheus_reads_the_record() -> None:
    from openrs_ray.ops.metrics import RunMetrics

    telemetry = RunMetrics(None)  # registry only, no HTTP endpoint
    record = _rl_record()
    record.learner |= {"kl": 0.125, "learner_tokens": 6.0, "learn_s": 2.0}
    telemetry.observe(record, _groups(), queue_depth=3)
    value = telemetry.registry.get_sample_value
    assert value("openrs_reward_mean") == 0.5 and value("openrs_language_drift_ratio") == 0.25
    assert value("openrs_reward", {"component": "accuracy"}) == 0.5 and value("openrs_kl") == 0.125
    assert value("openrs_learner_tokens_per_second") == 3.0 and value("openrs_engines_up") == 2
    assert value("openrs_step_phase_seconds", {"phase": "learn"}) == 2.0 and value("openrs_verifier_queue_depth") == 3
    assert value("openrs_verifier_errors_total") == 1 and value("openrs_weight_sync_bytes_total") == 1024.0
    assert value("openrs_rollout_tokens_total", {"engine": "0"}) == 6 and value("openrs_cost_dollars") == 0.1
    assert value("openrs_cpu_hours", {"role": "generator"}) == 0.5 and value("openrs_learner_weight_version") == 3

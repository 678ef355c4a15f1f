"""The typed record of one training step: what a stage driver returns and metrics.jsonl, the trackers and
Prometheus receive.

A driver fills one `StepRecord` (rl: rollout statistics and flow counters; sft/kd: supervised counters); the
consumers read its fields. `to_dict()` is the metrics.jsonl line, with the keys and their order that runs have
always written (users and tests read those files), so a record is written one way, in one place. The groups
whose keys depend on the run stay mappings: the learner's metrics (they depend on the loss), the weight sync's,
the staleness histogram, costs per role and evaluation results.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from openrs_ray.types import ScoredGroup


def _mean(xs: list[float | None]) -> float:
    """Mean of the values that apply (None: a user reward that does not apply to that rollout)."""
    applied = [x for x in xs if x is not None]
    return float(statistics.fmean(applied)) if applied else 0.0


@dataclass
class RolloutStats:
    """Reward, accuracy and length statistics of the groups trained on in one rl step."""

    reward_mean: float
    reward_std: float
    accuracy_mean: float
    completion_tokens: int
    completion_length_mean: float
    truncated_ratio: float
    components: dict[str, float] = field(default_factory=dict)  # mean per reward function (reward/<name>)
    language_drift_rate: float | None = None  # share of completions leaving the prompt's script (language reward)

    @classmethod
    def of(cls, groups: list[ScoredGroup]) -> RolloutStats:
        """The statistics of `groups` (zeros when none was trained on)."""
        rewards = [r for g in groups for r in g.rewards]
        lengths = [len(r.completion_ids) for g in groups for r in g.rollouts]
        names = sorted({n for g in groups for n in g.components})
        drift = None
        if "language" in names:  # any letters outside the prompt's script score below zero
            drift = _mean([float(v < 0) for g in groups for v in g.components["language"]])
        return cls(
            reward_mean=_mean(rewards),
            reward_std=float(statistics.pstdev(rewards)) if rewards else 0.0,
            accuracy_mean=_mean([a for g in groups for a in g.components.get("accuracy", [])]),
            completion_tokens=sum(lengths),
            completion_length_mean=_mean([float(n) for n in lengths]),
            truncated_ratio=_mean([float(r.finish_reason == "length") for g in groups for r in g.rollouts]),
            components={n: _mean([v for g in groups for v in g.components.get(n, [])]) for n in names},
            language_drift_rate=drift,
        )

    def to_dict(self) -> dict[str, Any]:
        """The flat keys of metrics.jsonl (reward/<name> per component)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("components", "language_drift_rate")}
        out |= {f"reward/{name}": value for name, value in self.components.items()}
        return out if self.language_drift_rate is None else {**out, "language_drift_rate": self.language_drift_rate}


@dataclass
class FlowCounters:
    """What an rl step's buffer, verifiers and generators counted (totals since the start where named so)."""

    groups_trained: int
    nonfinite_skipped_total: int
    dropped_unparsable: int
    dropped_stale: int
    dropped_zero_variance: int
    refill_rounds: int
    dropped_too_long: int
    verify_timeouts: int
    verify_group_timeouts: int
    verify_errors: int
    verifier_restarts: int
    generator_restarts: int
    nodes_lost: int  # nodes that hosted a lost engine and that Ray declared dead
    num_engines: int
    generator_target: int  # the engine count in force (generation.autoscale, an operator, or the config)
    generator_scale_reason: str  # why: fixed, manual, or the autoscaler's reason


@dataclass
class SupervisedCounters:
    """Where a supervised step's data stands: the epoch and the rows dropped so far."""

    epoch: int
    dropped_too_long: int
    dropped_malformed: int


@dataclass
class StepRecord(Mapping[str, Any]):
    """One step of any stage. Reading it as a mapping gives its metrics.jsonl line (what scripts index by key)."""

    step: int
    prompt_uids: list[str]
    phases: dict[str, float]  # wall seconds per phase name (time_<phase>_s in metrics.jsonl)
    learner: dict[str, float] = field(default_factory=dict)  # LearnerGroup.update's metrics; empty: no update
    cost: dict[str, float] = field(default_factory=dict)  # CostMeter.summary: hours per role, dollars
    stage: str | None = None  # supervised stages name themselves; rl lines carry no stage
    weight_version: int | None = None  # rl: the learner's newest published version
    rollout: RolloutStats | None = None  # rl
    sync: dict[str, float] = field(default_factory=dict)  # rl: the weight broadcast's timings and bytes
    staleness: dict[str, Any] = field(default_factory=dict)  # rl: staleness_mean, _max, _hist
    flow: FlowCounters | None = None  # rl
    supervised: SupervisedCounters | None = None  # sft / kd
    placement: dict[str, Any] | None = None  # where each role runs: on the first step written only
    evaluation: dict[str, Any] = field(default_factory=dict)  # eval/<benchmark>/<metric> on evaluated steps

    def to_dict(self) -> dict[str, Any]:
        """The metrics.jsonl line: the same keys, in the same order, as every earlier run wrote."""
        times = {f"time_{phase}_s": s for phase, s in self.phases.items()}
        if self.supervised is not None:
            body = {"step": self.step, "stage": self.stage, **self.learner, **times, **asdict(self.supervised)}
        else:
            rollout = self.rollout.to_dict() if self.rollout is not None else {}
            flow = asdict(self.flow) if self.flow is not None else {}
            body = {"step": self.step, "weight_version": self.weight_version, **rollout, **times, **self.learner}
            body |= {**self.sync, **self.staleness, **flow}
        body |= {**self.cost, "prompt_uids": self.prompt_uids}
        if self.placement is not None:
            body["placement"] = self.placement
        return body | self.evaluation

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

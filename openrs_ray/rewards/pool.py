"""VerifierPool: CPU Ray actors that score whole groups of rollouts.

math-verify runs with its SIGALRM timeouts off (signals only work in the main thread; verl saw every
MATH score come back 0 inside Ray worker threads). The hard time bound is the pool's: a group whose
score does not arrive within `rewards.timeout_s` is scored zero and counted by the buffer.
"""

from __future__ import annotations

import ray

from openrs_ray.config import RunConfig
from openrs_ray.rewards.math_answer import UnparsableGold
from openrs_ray.rewards.registry import RewardContext, score_sample
from openrs_ray.types import Prompt, Rollout, ScoredGroup


class Verifier:
    """The verifier boundary's one verb: score a group. Runs inside a Ray actor."""

    def __init__(self, cfg: RunConfig) -> None:
        rc = cfg.rewards
        self.weights = {f.name: f.weight for f in rc.functions}
        self.weights.setdefault("accuracy", 0.0)  # always measured: the run's headline metric
        self.max_len = rc.cosine_max_len or cfg.generation.max_completion_length
        self.unit = rc.cosine_length_unit

    def score(self, prompt: Prompt, rollouts: list[Rollout]) -> ScoredGroup:
        """Weighted reward per rollout plus each component; an unparsable gold drops the group."""
        rewards: list[float] = []
        components: dict[str, list[float]] = {name: [] for name in self.weights}
        errors = 0
        for r in rollouts:
            length = len(r.completion_ids) if self.unit == "tokens" else len(r.completion_text)
            ctx = RewardContext(r.completion_text, prompt.answer, length, self.max_len)
            try:
                total, parts = score_sample(ctx, self.weights)
            except UnparsableGold:
                return ScoredGroup(prompt, rollouts, [0.0] * len(rollouts), dropped=True)
            except Exception:  # noqa: BLE001 - bad model output must score zero, never crash the run
                total, parts, errors = 0.0, dict.fromkeys(self.weights, 0.0), errors + 1
            rewards.append(total)
            for name, value in parts.items():
                components[name].append(value)
        version = min(r.weight_version for r in rollouts)
        return ScoredGroup(prompt, rollouts, rewards, components, version, verify_errors=errors)


class VerifierPool:
    """`rewards.num_workers` Verifier actors; groups are spread round-robin."""

    def __init__(self, cfg: RunConfig) -> None:
        actor_cls = ray.remote(Verifier).options(num_cpus=cfg.cluster.verifier_cpus)
        self.actors = [actor_cls.remote(cfg) for _ in range(cfg.rewards.num_workers)]
        self._next = 0

    def score(self, groups: list[tuple[Prompt, list[Rollout]]]) -> list[ray.ObjectRef]:
        """Submit groups for scoring; returns one ObjectRef[ScoredGroup] per group, without waiting."""
        refs = []
        for prompt, rollouts in groups:
            refs.append(self.actors[self._next].score.remote(prompt, rollouts))
            self._next = (self._next + 1) % len(self.actors)
        return refs

    def shutdown(self) -> None:
        """End the verifier actors."""
        for a in self.actors:
            ray.kill(a)

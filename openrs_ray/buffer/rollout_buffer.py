"""RolloutBuffer: ObjectRefs of scored groups, tagged with the weight version that sampled them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import ray
import torch

from openrs_ray.buffer.advantages import group_advantages
from openrs_ray.config import BufferConfig
from openrs_ray.types import ScoredGroup, TrainBatch


@dataclass
class TakeStats:
    """What happened to the groups taken for one batch."""

    groups: int = 0
    dropped_unparsable: int = 0
    group_timeouts: int = 0  # groups never scored in time (dropped)
    sample_timeouts: int = 0  # completions scored 0 because scoring ran past its limit
    verify_errors: int = 0
    stale: int = 0


class RolloutBuffer:
    """Holds refs until the learner takes a batch; computes advantages and enforces staleness."""

    def __init__(self, cfg: BufferConfig, group_size: int) -> None:
        self.cfg, self.group_size = cfg, group_size
        self._refs: deque[tuple[ray.ObjectRef, int]] = deque()

    def __len__(self) -> int:
        return len(self._refs)

    def add(self, refs: list[ray.ObjectRef], weight_version: int) -> None:
        """Queue refs of groups sampled with `weight_version` (resolved only when taken)."""
        self._refs.extend((r, weight_version) for r in refs)

    def take(
        self, num_groups: int, learner_version: int, timeout_s: float
    ) -> tuple[TrainBatch, list[ScoredGroup], TakeStats]:
        """Resolve up to `num_groups` groups and build a batch with group-normalised advantages.

        A group not scored within `timeout_s` is dropped and counted (it would carry zero advantage
        anyway); so are groups with an unparsable gold and groups older than `max_staleness`.
        """
        taken = [self._refs.popleft() for _ in range(min(num_groups, len(self._refs)))]
        stats = TakeStats(groups=len(taken))
        ready, _ = ray.wait([r for r, _ in taken], num_returns=len(taken), timeout=timeout_s)
        ready_set = set(ready)
        groups: list[ScoredGroup] = []
        for ref, version in taken:
            if ref not in ready_set:
                stats.group_timeouts += 1
                ray.cancel(ref, force=False)
                continue
            group: ScoredGroup = ray.get(ref)
            stats.verify_errors += group.verify_errors
            stats.sample_timeouts += group.verify_timeouts
            if group.dropped:
                stats.dropped_unparsable += 1
            elif learner_version - version > self.cfg.max_staleness:
                stats.stale += 1
            else:
                groups.append(group)
        return self._batch(groups), groups, stats

    def _batch(self, groups: list[ScoredGroup]) -> TrainBatch:
        rewards = torch.tensor([r for g in groups for r in g.rewards], dtype=torch.float32)  # [N]
        adv = group_advantages(rewards, self.group_size, self.cfg.advantage_scale) if groups else rewards
        rows = [(g.prompt, r) for g in groups for r in g.rollouts]
        return TrainBatch(
            prompt_ids=[list(p.token_ids) for p, _ in rows],
            completion_ids=[r.completion_ids for _, r in rows],
            advantages=adv.tolist(),
            sampling_logprobs=[r.sampling_logprobs for _, r in rows],
            weight_versions=[r.weight_version for _, r in rows],
            loss_weights=[1.0] * len(rows),
        )

"""RolloutBuffer: ObjectRefs of scored groups, tagged with the weight version that sampled them.

It owns what happens between scoring and learning: staleness (groups older than `max_staleness`
versions are dropped), dynamic sampling (zero-variance groups dropped so the orchestrator refills),
overlong handling, and group-normalised advantages.

It holds futures of scored groups: Ray ObjectRefs from the verifier pool, or concurrent.futures.Future from an
in-process pool (unit tests, local debugging) and for groups restored from a checkpoint.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

import ray
import torch

from openrs_ray.buffer.advantages import group_advantages
from openrs_ray.config import BufferConfig
from openrs_ray.rewards.shaping import overlong_penalty
from openrs_ray.types import ScoredGroup, TrainBatch


@dataclass
class TakeStats:
    """What happened to the groups taken for one batch (summed over refill rounds)."""

    groups: int = 0
    dropped_unparsable: int = 0
    group_timeouts: int = 0  # groups never scored in time (dropped)
    sample_timeouts: int = 0  # completions scored 0 because scoring ran past its limit
    verify_errors: int = 0
    stale: int = 0  # groups older than max_staleness versions (dropped)
    zero_variance: int = 0  # groups with equal rewards dropped by dynamic sampling
    refill_rounds: int = 0

    def add(self, other: TakeStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Staleness:
    """Weight-version lag of every trained completion."""

    counts: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, float | dict[str, int]]:
        n = sum(self.counts.values())
        mean = sum(k * v for k, v in self.counts.items()) / n if n else 0.0
        hist = {str(k): v for k, v in sorted(self.counts.items())}
        return {"staleness_mean": mean, "staleness_max": float(max(self.counts, default=0)), "staleness_hist": hist}


ScoredFuture = Any  # ray.ObjectRef[ScoredGroup] | Future[ScoredGroup]


def _ready(items: list[ScoredFuture], timeout_s: float) -> set[ScoredFuture]:
    """The items resolved within `timeout_s` in all (Ray refs waited for by Ray, other futures by concurrent)."""
    deadline = time.monotonic() + timeout_s
    refs = [x for x in items if isinstance(x, ray.ObjectRef)]
    futures = [x for x in items if isinstance(x, Future)]
    done: set[ScoredFuture] = set(ray.wait(refs, num_returns=len(refs), timeout=timeout_s)[0]) if refs else set()
    if futures:
        done |= wait_futures(futures, timeout=max(0.0, deadline - time.monotonic())).done
    return done


def _get(item: ScoredFuture, timeout_s: float | None = None) -> ScoredGroup:
    return item.result(timeout=timeout_s) if isinstance(item, Future) else ray.get(item, timeout=timeout_s)


def _done(group: ScoredGroup) -> Future:
    future: Future = Future()
    future.set_result(group)
    return future


class RolloutBuffer:
    """Holds refs until the learner takes a batch; computes advantages and enforces staleness."""

    def __init__(self, cfg: BufferConfig, group_size: int, max_completion_length: int) -> None:
        self.cfg, self.group_size, self.max_len = cfg, group_size, max_completion_length
        self._refs: deque[tuple[ScoredFuture, int]] = deque()

    def __len__(self) -> int:
        return len(self._refs)

    def add(self, refs: list[ScoredFuture], weight_version: int) -> None:
        """Queue refs of groups sampled with `weight_version` (resolved only when taken)."""
        self._refs.extend((r, weight_version) for r in refs)

    def snapshot(self, timeout_s: float) -> list[ScoredGroup]:
        """The queued groups, resolved (for checkpoints); the queue itself is left as it is."""
        return [_get(ref, timeout_s) for ref, _ in self._refs]

    def restore(self, groups: list[ScoredGroup]) -> None:
        """Queue groups saved by `snapshot` again (as resolved futures: they are already in this process)."""
        for g in groups:
            self.add([_done(g)], g.weight_version)

    def take(self, num_groups: int, learner_version: int, timeout_s: float) -> tuple[list[ScoredGroup], TakeStats]:
        """Resolve up to `num_groups` queued groups; keep those fit to train on.

        Dropped and counted: groups not scored within `timeout_s`, groups with an unparsable gold,
        groups more than `max_staleness` versions behind, and (dynamic sampling) groups whose rewards
        are all equal, which carry no advantage.
        """
        taken = [self._refs.popleft() for _ in range(min(num_groups, len(self._refs)))]
        stats = TakeStats(groups=len(taken))
        ready_set = _ready([r for r, _ in taken], timeout_s)
        groups: list[ScoredGroup] = []
        for ref, version in taken:
            if ref not in ready_set:
                stats.group_timeouts += 1
                if isinstance(ref, Future):
                    ref.cancel()
                else:
                    ray.cancel(ref, force=False)
                continue
            group = _get(ref)
            stats.verify_errors += group.verify_errors
            stats.sample_timeouts += group.verify_timeouts
            if group.dropped:
                stats.dropped_unparsable += 1
            elif learner_version - version > self.cfg.max_staleness:
                stats.stale += 1
            elif self.cfg.dynamic_sampling and max(group.rewards) == min(group.rewards):
                stats.zero_variance += 1
            else:
                groups.append(group)
        return groups, stats

    def _shaped_rewards(self, group: ScoredGroup) -> list[float]:
        if self.cfg.overlong != "penalty":
            return list(group.rewards)
        return [
            r
            + overlong_penalty(
                len(o.completion_ids), self.max_len, self.cfg.overlong_buffer_len, self.cfg.overlong_penalty
            )
            for r, o in zip(group.rewards, group.rollouts, strict=True)
        ]

    def batch(self, groups: list[ScoredGroup], learner_version: int) -> tuple[TrainBatch, Staleness]:
        """Rows of the groups with advantages (after overlong shaping) and their staleness."""
        rewards = torch.tensor([r for g in groups for r in self._shaped_rewards(g)], dtype=torch.float32)  # [N]
        adv = group_advantages(rewards, self.group_size, self.cfg.advantage_scale) if groups else rewards
        rows = [r for g in groups for r in g.rollouts]
        masked = self.cfg.overlong == "mask"
        return TrainBatch(
            prompt_ids=[list(r.prompt_ids) for r in rows],
            completion_ids=[r.completion_ids for r in rows],
            advantages=adv.tolist(),
            sampling_logprobs=[r.sampling_logprobs for r in rows],
            weight_versions=[r.weight_version for r in rows],
            loss_weights=[0.0 if masked and r.finish_reason == "length" else 1.0 for r in rows],
        ), Staleness(Counter(learner_version - r.weight_version for r in rows))

"""The generate → score half of the flow, shared by every driver that samples and judges.

    prompts → GeneratorGroup (vLLM engines) → VerifierPool (reward actors) → ObjectRefs of ScoredGroups

The orchestrator (RL: keeps 1 + max_staleness batches in flight and hands the refs to the rollout buffer), the
kd_seq teacher pass (one batch at a time, waits for the scores) and the evaluator (a window of chunks per engine,
scores consumed as they finish) all drive this one class; what each does with the scored groups stays with it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import ray

from openrs_ray.generators.group import GeneratorGroup, PendingGeneration
from openrs_ray.rewards.pool import VerifierPool
from openrs_ray.types import Prompt, Rollout, ScoredGroup


class GenerateScore:
    """Batches of prompts through the engines, then to the verifier pool; batches in flight are kept in order."""

    def __init__(self, generators: GeneratorGroup, verifiers: VerifierPool) -> None:
        self.generators, self.verifiers = generators, verifiers
        self.in_flight: deque[tuple[list[Prompt], PendingGeneration]] = deque()  # dispatched, not collected

    def submit(self, batch: list[Prompt], sampling: dict[str, Any] | None = None) -> None:
        """Dispatch a batch to the engines and return at once; `next()` collects batches in submission order."""
        self.in_flight.append((batch, self.generators.submit(batch, sampling)))

    def batches_in_flight(self) -> list[list[Prompt]]:
        """The prompts dispatched and not collected, oldest first (what a checkpoint re-issues on resume)."""
        return [batch for batch, _ in self.in_flight]

    def next(self) -> tuple[list[Prompt], list[list[Rollout]]]:
        """The oldest batch in flight, with its rollouts (waits for the engines)."""
        batch, pending = self.in_flight.popleft()
        return list(batch), self.generators.collect(pending)

    def score(self, prompts: list[Prompt], rollouts: list[list[Rollout]]) -> list[ray.ObjectRef]:
        """Send each prompt's group to the verifier pool; one ObjectRef[ScoredGroup] per prompt, without waiting."""
        return self.verifiers.score(list(zip(prompts, rollouts, strict=True)))

    def scored(self, batch: list[Prompt], timeout_s: float) -> list[ScoredGroup]:
        """One batch synchronously: generate, score and wait at most `timeout_s` for the scores."""
        return ray.get(self.score(batch, self.generators.generate(batch)), timeout=timeout_s)

    def stream(
        self, chunks: Iterable[list[Prompt]], per_engine: int, sampling: dict[str, Any] | None = None
    ) -> Iterator[list[ray.ObjectRef]]:
        """Every chunk's score refs, as each chunk is generated. `per_engine` chunks per engine stay in flight, so
        no engine idles before the end; each chunk goes to the verifier pool as soon as it is generated."""
        todo = deque(chunks)
        while todo or self.in_flight:
            while todo and len(self.in_flight) < per_engine * len(self.generators.engines):
                self.submit(todo.popleft(), sampling)
            yield self.score(*self.next())

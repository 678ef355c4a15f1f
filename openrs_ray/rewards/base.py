"""The verifier boundary, at two levels: one scoring worker (`GroupScorer`, a Ray actor in the pool) and the
pool as the orchestrator, evaluator and teacher use it (`Verifiers`: score groups, report health, stop)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from openrs_ray.types import Prompt, Rollout, ScoredGroup


class GroupScorer(ABC):
    """One verifier worker: scores one group at a time."""

    @abstractmethod
    def score(self, prompt: Prompt, rollouts: list[Rollout]) -> ScoredGroup:
        """Every reward component and the weighted total per rollout; failures are zeros, counted."""

    @abstractmethod
    def whoami(self) -> str:
        """An id of this worker process (changes when it is restarted: the pool counts restarts with it)."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop what scoring started (child processes)."""


class Verifiers(ABC):
    """Scores groups of rollouts asynchronously; a second backend (e.g. a remote reward service) implements these."""

    @abstractmethod
    def score(self, groups: list[tuple[Prompt, list[Rollout]]]) -> list[Any]:
        """Submit groups; returns one future of a ScoredGroup per group, without waiting: a Ray ObjectRef, or a
        concurrent.futures.Future for an in-process pool (the RolloutBuffer resolves either)."""

    @abstractmethod
    def queue_depth(self) -> int:
        """Groups submitted and not yet scored."""

    @abstractmethod
    def count_restarts(self) -> int:
        """Verifier processes restarted so far."""

    def check(self) -> None:
        """Before a step: raise errors.VerifiersLost when the verifiers are gone for good (default: never)."""
        return None

    def wait(self, futures: list[Any], timeout_s: float) -> None:
        """Wait until these scores are ready or `timeout_s` passes, and raise errors.VerifiersLost as soon as the
        verifiers are gone for good (default: return at once; the rollout buffer waits for the futures)."""
        return None

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every verifier process."""

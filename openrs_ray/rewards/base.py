"""The verifier boundary as the orchestrator, evaluator and teacher use it: score groups, report health, stop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from openrs_ray.types import Prompt, Rollout


class Verifiers(ABC):
    """Scores groups of rollouts asynchronously; a second backend (e.g. a remote reward service) implements these."""

    @abstractmethod
    def score(self, groups: list[tuple[Prompt, list[Rollout]]]) -> list[Any]:
        """Submit groups; returns one future (a Ray ObjectRef) of a ScoredGroup per group, without waiting."""

    @abstractmethod
    def queue_depth(self) -> int:
        """Groups submitted and not yet scored."""

    @abstractmethod
    def count_restarts(self) -> int:
        """Verifier processes restarted so far."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every verifier process."""

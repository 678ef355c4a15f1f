"""The weight-broadcast boundary: learner rank 0 publishes versioned weights; generators receive them."""

from __future__ import annotations

from abc import ABC, abstractmethod

from openrs_ray.types import WeightVersion


class WeightBroadcast(ABC):
    """Moves one weight version from the learners to every generator engine."""

    @abstractmethod
    def publish(self) -> tuple[WeightVersion, dict[str, float]]:
        """Ship the learners' current weights as the next version; returns it and sync metrics."""

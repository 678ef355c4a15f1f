"""The learner boundary: one verb, `update`."""

from __future__ import annotations

from abc import ABC, abstractmethod

from openrs_ray.types import TrainBatch


class Learner(ABC):
    """One data-parallel rank: takes its shard of a batch and makes one optimizer step."""

    @abstractmethod
    def update(self, batch: TrainBatch, num_items_in_batch: int) -> dict[str, float]:
        """One optimizer step on this rank's shard; returns this rank's metrics."""

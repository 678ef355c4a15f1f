"""The generator boundary: one verb, `generate`."""

from __future__ import annotations

from abc import ABC, abstractmethod

from openrs_ray.types import Prompt, Rollout


class Generator(ABC):
    """Samples completions for prompts with the weights of one version."""

    @abstractmethod
    def generate(self, prompts: list[Prompt]) -> list[list[Rollout]]:
        """Return, per prompt, its `num_generations` rollouts tagged with the engine's weight version."""

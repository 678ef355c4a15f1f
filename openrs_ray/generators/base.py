"""The generator boundary, at two levels: one engine (`Generator`, a Ray actor) and the engines as one
(`Generators`, what the orchestrator, evaluator, teacher and broadcast drive).

A backend (vLLM today; SGLang would be another) implements `Generator` and is named in openrs_ray.backends.
The collective weight channel is a separate, optional ability (`ChannelReceivers`): the object-store
broadcast and every stage driver need only `Generators`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from openrs_ray.types import Prompt, Rollout

if TYPE_CHECKING:
    from openrs_ray.config import RunConfig


class Generator(ABC):
    """One engine: samples completions for prompts with the weights of the version it serves."""

    @abstractmethod
    def ready(self) -> dict[str, float]:
        """Engine id, the weight version it serves (`version`) and its seconds spent generating (`busy_s`)."""

    @abstractmethod
    def generate(self, prompts: list[Prompt], sampling: dict[str, Any] | None = None) -> list[list[Rollout]]:
        """Return, per prompt, its `num_generations` rollouts tagged with the engine's weight version."""

    @abstractmethod
    def load_weights(self, bucket_refs: list, version: int, timeout_s: float) -> dict[str, float]:
        """Load a published weight version from object-store buckets, then serve it."""

    @abstractmethod
    def open_channel(
        self, host: str, port: int, rank: int, world_size: int, epoch: int, timeout_s: float, backend: str = "gloo"
    ) -> int:
        """Join the collective weight channel as `rank` (leaving the previous one)."""

    @abstractmethod
    def receive_weights(self, specs: list, bucket_bytes: int, version: int) -> dict[str, float]:
        """Load the version being broadcast on the channel, then serve it."""

    @abstractmethod
    def placement(self) -> dict:
        """Node and GPU this engine runs on."""

    @abstractmethod
    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        """Logprob of each token after the first given the ones before it (temperature 1)."""

    @abstractmethod
    def topk_logprobs(self, rows: list[list[int]], starts: list[int], k: int) -> list[tuple[list, list]]:
        """Top-k (ids, logprobs) at every position from `starts[i]` on (a KD teacher)."""


class Generators(ABC):
    """The engines addressed as one: dispatch, collect, load weights, grow and shrink."""

    cfg: RunConfig
    engines: list[Any]  # the engines serving now (their count is the group's size)
    restarts: int  # engines replaced after dying

    @abstractmethod
    def wait_ready(self) -> None:
        """Block until the initial engines serve (bounded by a timeout)."""

    @abstractmethod
    def submit(self, prompts: list[Prompt], sampling: dict[str, Any] | None = None) -> Any:
        """Dispatch prompts and return at once: a pending handle for `collect`."""

    @abstractmethod
    def collect(self, pending: Any) -> list[list[Rollout]]:
        """Rollouts per prompt of a `submit`, in prompt order."""

    def generate(self, prompts: list[Prompt], sampling: dict[str, Any] | None = None) -> list[list[Rollout]]:
        """Synchronous generation: submit and collect."""
        return self.collect(self.submit(prompts, sampling))

    @abstractmethod
    def load_weights(self, bucket_refs: list, version: int) -> list[dict[str, float]]:
        """Every engine loads `version` from object-store buckets (the object-store broadcast)."""

    @abstractmethod
    def reported_versions(self) -> list[int]:
        """The weight version each engine says it serves."""

    @abstractmethod
    def placement(self) -> list[dict]:
        """Node and GPU of each engine, in engine order."""

    @abstractmethod
    def add(self, n: int) -> list[int]:
        """Start `n` more engines (serving only once they hold the current version); their ids."""

    @abstractmethod
    def remove(self, n: int) -> list[int]:
        """Stop the `n` newest engines (one always stays); their ids."""

    def grow(self, n: int) -> list[int]:
        """Start up to `n` more engines, only as many as the cluster can place now (default: `add`)."""
        return self.add(n)

    def nodes_lost(self) -> int:
        """Nodes that hosted a lost engine and are gone (default: none; in-process groups lose no nodes)."""
        return 0

    @abstractmethod
    def shutdown(self) -> None:
        """End every engine."""


class ChannelReceivers(ABC):
    """Engines that receive weights on a collective channel (broadcast/collective.py)."""

    @abstractmethod
    def open_channel(
        self, host: str, port: int, world_size: int, epoch: int, timeout_s: float, backend: str = "gloo"
    ) -> list:
        """Futures of every engine joining the channel as ranks 1..n."""

    @abstractmethod
    def receive_weights(self, specs: list, bucket_bytes: int, version: int) -> list:
        """Futures of every engine loading `version` from the channel."""

    @abstractmethod
    def wait_engines(self, refs: list, what: str, timeout_s: float) -> list:
        """Wait for one call per engine; a timeout names the engines that did not answer."""

    @abstractmethod
    def replace_lost(self) -> int:
        """Replace (or drop) the engines that died since they last answered; how many."""

    @abstractmethod
    def channel_failures(self, refs: list, what: str, timeout_s: float) -> list[str]:
        """Wait for one channel call per engine; a line per engine that died or whose call failed."""

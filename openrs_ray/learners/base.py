"""The learner boundary, at two levels: one data-parallel rank (`Learner`, a Ray actor) and the ranks as one
(`Learners`, what the stage drivers and the broadcast drive).

A backend (DeepSpeed today; FSDP would be another) implements `Learner` and is named in openrs_ray.backends.
The collective weight channel is a separate ability (`ChannelSender`), used only by broadcast/collective.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from openrs_ray.types import TrainBatch, WeightVersion


class Learner(ABC):
    """One data-parallel rank: takes its shard of a batch and makes one optimizer step."""

    @abstractmethod
    def rendezvous(self) -> tuple[str, int]:
        """Address and port of the process group (asked of rank 0 before `init`)."""

    @abstractmethod
    def init(self, master_addr: str, master_port: int) -> dict[str, float]:
        """Join the process group and build the model and optimizer; returns init stats."""

    @abstractmethod
    def update(self, batch: TrainBatch, num_items_in_batch: int) -> dict[str, float]:
        """One optimizer step on this rank's shard; returns this rank's metrics."""

    @abstractmethod
    def logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """Logprobs of a completion's tokens (temperature 1)."""

    @abstractmethod
    def export_weights(self, bucket_bytes: int) -> tuple[list, int, int] | None:
        """Rank 0: (object-store bucket refs, bytes, tensors) of the full weights; other ranks take part."""

    @abstractmethod
    def full_state(self) -> dict:
        """This rank's full parameters (consistency checks)."""

    @abstractmethod
    def save(self, path: str) -> str:
        """HF-format checkpoint plus trainer state under `path`."""

    @abstractmethod
    def load(self, path: str) -> str:
        """Restore the trainer state written by `save`."""

    @abstractmethod
    def placement(self) -> dict:
        """Node and GPU of this rank."""

    @abstractmethod
    def weight_specs(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, dtype) of every parameter in send order."""

    @abstractmethod
    def channel_address(self) -> tuple[str, int]:
        """Start the weight channel's store on this host; its address."""

    @abstractmethod
    def open_channel(self, host: str, port: int, world_size: int, epoch: int) -> int:
        """Join the weight channel (rank 0 sends; others take part in gathers)."""

    @abstractmethod
    def send_weights(self, bucket_bytes: int) -> tuple[int, str | None]:
        """Send the current weights on the channel; (bytes sent, the channel's error if a member was lost)."""

    @abstractmethod
    def shutdown(self) -> None:
        """Leave the process group and free its resources."""


class Learners(ABC):
    """The ranks driven as one: a step on a whole batch, weights out, checkpoints in and out."""

    @abstractmethod
    def wait_ready(self) -> list[dict[str, float]]:
        """Block until every rank is up (bounded by a timeout); their init stats."""

    @abstractmethod
    def update(self, batch: TrainBatch) -> dict[str, float]:
        """Shard the batch over ranks, one step on each; the merged metrics."""

    @abstractmethod
    def export_weights(self, version: int) -> tuple[WeightVersion, list]:
        """The current weights as `version` in object-store buckets (the object-store broadcast)."""

    @abstractmethod
    def save(self, path: str) -> str:
        """Checkpoint every rank under `path`."""

    @abstractmethod
    def load(self, path: str) -> str:
        """Restore every rank from `path` (written by save)."""

    @abstractmethod
    def logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        """Logprobs of a completion under the current weights."""

    @abstractmethod
    def placement(self) -> list[dict]:
        """Node and GPU of each rank, in rank order."""

    @abstractmethod
    def shutdown(self) -> None:
        """End every rank."""


class ChannelSender(ABC):
    """Ranks that send weights on a collective channel (broadcast/collective.py)."""

    @abstractmethod
    def channel_address(self) -> tuple[str, int]:
        """Start the channel's store on rank 0's host."""

    @abstractmethod
    def weight_specs(self) -> list:
        """(name, shape, dtype) of every parameter, in send order."""

    @abstractmethod
    def open_channel(self, host: str, port: int, world_size: int, epoch: int) -> list:
        """Futures of the ranks joining the channel."""

    @abstractmethod
    def send_weights(self, bucket_bytes: int) -> list:
        """Futures of the ranks sending the current weights."""

    @abstractmethod
    def wait(self, refs: list, what: str) -> list:
        """Wait for learner calls, bounded by a timeout naming the call."""

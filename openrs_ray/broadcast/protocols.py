"""What a weight broadcast needs from the two sides it connects, as structural types.

The broadcast backends depend on these protocols, not on GeneratorGroup or LearnerGroup: broadcast/ sits below
the roles (generators/ and learners/ import broadcast.channel), so importing the concrete groups from here would
run back up the layers. Any object with these methods works, e.g. an in-process stand-in in a unit test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from openrs_ray.config import RunConfig
from openrs_ray.types import WeightVersion


class EngineHandle(Protocol):
    """One generator engine as the broadcast sees it."""

    incarnation: int
    """Unique per spawned actor: a replacement keeps the engine id, never the incarnation."""


class WeightSource(Protocol):
    """The learner side: rank 0 exports or sends its weights."""

    def export_weights(self, version: int) -> tuple[WeightVersion, list]:
        """Rank 0's weights as object-store bucket refs, stamped `version`."""
        ...

    def weight_specs(self) -> list:
        """(name, shape, dtype) of every tensor rank 0 sends on the channel, in order."""
        ...

    def channel_address(self) -> tuple[str, int]:
        """Host and free port where rank 0 serves the channel's rendezvous store."""
        ...

    def open_channel(self, host: str, port: int, world_size: int, epoch: int) -> list:
        """Refs of rank 0 joining the channel of membership `epoch` as rank 0."""
        ...

    def send_weights(self, bucket_bytes: int) -> list:
        """Refs of rank 0 broadcasting its weights on the channel, in buckets."""
        ...

    def wait(self, refs: list, what: str) -> list:
        """Results of learner calls, bounded by the learner timeout."""
        ...


class WeightSink(Protocol):
    """The generator side: every engine loads a version, from the object store or the channel."""

    cfg: RunConfig
    engines: Sequence[EngineHandle]
    catch_up: Callable[[], tuple[list, int]] | None
    """Called for the newest weights (refs, version) when an engine joins before any load_weights."""

    def load_weights(self, bucket_refs: list, version: int) -> Any:
        """Every engine loads `version` from object-store refs (fails loudly naming a late engine)."""
        ...

    def open_channel(
        self, host: str, port: int, world_size: int, epoch: int, timeout_s: float, backend: str = "gloo"
    ) -> list:
        """Refs of every engine joining the channel as ranks 1..n."""
        ...

    def receive_weights(self, specs: list, bucket_bytes: int, version: int) -> list:
        """Refs of every engine loading `version` from the channel."""
        ...

    def wait_engines(self, refs: list, what: str, timeout_s: float) -> list:
        """Results of one call per engine; a timeout names the late engines."""
        ...

    def replace_lost(self) -> int:
        """Replace (or drop) the engines that died since they last answered; how many."""
        ...

    def channel_failures(self, refs: list, what: str, timeout_s: float) -> list[str]:
        """Wait for one channel call per engine; one line per engine that died or whose call failed."""
        ...

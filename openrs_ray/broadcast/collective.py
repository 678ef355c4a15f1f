"""Weight broadcast over a process group of learner rank 0 and the engines (gloo on CPU).

Process groups cannot grow, and no framework we know adds an engine to a running job. Here the
group carries a membership epoch: when engines join, leave or are replaced, the next publish forms a
new group (same store, new prefix) and every surviving member shuts its old group down. Membership is
keyed on each engine's incarnation, not its id: a dead engine is replaced under the same id by a fresh
process that holds no channel yet. A joining engine first catches up through the object store, so it
serves the current version before it is ever a member.

An engine that died since the last broadcast (e.g. during the update) is replaced before the group forms. One
lost mid-transfer fails the collective: the sender drains its tensors without sending (ZeRO-3 gathers stay in
step) and every engine reloads that version through the object store. Under gloo the sender only notices the
lost peer when its send times out (the channel's timeout), so that rarer case is bounded, not quick. Under NCCL,
torch's default TORCH_NCCL_ASYNC_ERROR_HANDLING (3) ends the process of a member whose collective fails, so on
GPUs this loss ends learner rank 0 and the run takes the learner-loss path (checkpoint, auto_resume).
"""

from __future__ import annotations

import time

from openrs_ray.broadcast.base import WeightBroadcast
from openrs_ray.broadcast.channel import channel_backend, channel_timeout_s, driver_wait_s
from openrs_ray.broadcast.protocols import WeightSink, WeightSource
from openrs_ray.types import WeightVersion


class CollectiveBroadcast(WeightBroadcast):
    """Versioned, bucketed broadcast of learner rank 0's weights on a torch.distributed group."""

    def __init__(
        self, learners: WeightSource, generators: WeightSink, bucket_mb: int, timeout_s: float, version: int = 0
    ) -> None:
        self.learners, self.generators = learners, generators
        self.bucket_bytes, self.timeout_s = bucket_mb * 2**20, timeout_s
        self.version, self.epoch = version, 0
        cfg = generators.cfg
        self.backend, self.channel_timeout_s = channel_backend(cfg), channel_timeout_s(cfg)
        self.wait_s = max(timeout_s, driver_wait_s(cfg))  # an async engine receives after its generation
        self._members: list[int] | None = None
        self._address: tuple[str, int] | None = None
        self._specs: list | None = None
        generators.catch_up = self._catch_up

    def _catch_up(self) -> tuple[list, int]:
        meta, refs = self.learners.export_weights(self.version)
        return refs, self.version

    def _form_group(self) -> None:
        """(Re)form the group when the engines changed since the last publish."""
        members = [e.incarnation for e in self.generators.engines]
        if members == self._members:
            return
        if self._address is None:
            self._address, self._specs = self.learners.channel_address(), self.learners.weight_specs()
        self.epoch += 1
        host, port = self._address
        world = 1 + len(members)
        sender = self.learners.open_channel(host, port, world, self.epoch)
        receivers = self.generators.open_channel(host, port, world, self.epoch, self.channel_timeout_s, self.backend)
        self.generators.wait_engines(receivers, "joining the weight channel", self.wait_s)
        self.learners.wait(sender, "open_channel()")
        self._members = members

    def publish(self) -> tuple[WeightVersion, dict[str, float]]:
        t0 = time.perf_counter()
        self.generators.replace_lost()  # a dead member is found before the group forms, not by a stalled send
        self._form_group()
        t_group = time.perf_counter() - t0
        version = self.version + 1
        receivers = self.generators.receive_weights(self._specs, self.bucket_bytes, version)
        senders = self.learners.send_weights(self.bucket_bytes)
        failed = self.generators.channel_failures(receivers, f"receiving weight version {version}", self.wait_s)
        nbytes, error = self.learners.wait(senders, "send_weights()")[0]
        fallback = bool(failed or error)
        if fallback:
            nbytes = self._reload_from_store(version, failed + ([f"sender: {error}"] if error else []))
        self.version = version
        seconds = time.perf_counter() - t0
        meta = WeightVersion(version=version, num_bytes=nbytes, num_tensors=len(self._specs))
        return meta, {
            "sync_s": seconds,
            "sync_group_s": t_group,
            "sync_bytes": float(nbytes),
            "sync_gbps": nbytes / seconds / 1e9 if seconds > 0 else 0.0,
            "sync_fallback": float(fallback),
        }

    def _reload_from_store(self, version: int, failed: list[str]) -> int:
        """A member was lost mid-broadcast: the survivors may hold half a version, so every engine reloads
        `version` whole through the object store (which replaces or drops the dead engine), and the next
        publish forms a new group without it. Returns the bytes exported."""
        print(f"openrs-ray: warning: weight channel broke at version {version} ({'; '.join(failed)}); "
              "reloading every engine through the object store", flush=True)  # fmt: skip
        self._members = None
        meta, refs = self.learners.export_weights(version)
        self.generators.load_weights(refs, version)
        return meta.num_bytes

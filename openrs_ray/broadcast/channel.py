"""A weight channel: one torch.distributed process group of learner rank 0 (rank 0) and the engines.

Gloo on CPU, NCCL between GPUs (written for GPU machines; the CPU tests exercise gloo). It is built the
way OpenRLHF builds its NCCL update group (a TCPStore served by the sender, a PrefixStore per membership
epoch, a standalone process group), so it lives beside DeepSpeed's and vLLM's own groups without
touching them. A process group cannot grow: when engines join or leave, the broadcast forms a new group
under a new epoch prefix on the same store.

Tensors travel in flat buckets of one dtype (bucket_size_mb), so the receiver holds at most one bucket
beside the model while vLLM's reload consumes it. Under NCCL `Work.wait()` only orders the GPU streams and
returns at once; each bucket is synchronised before the next is built, so the sender never queues a second
copy of the weights and the measured seconds are the transfer's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from openrs_ray.config import RunConfig

Spec = tuple[str, tuple[int, ...], str]  # (name, shape, dtype name)
Backend = Literal["gloo", "nccl"]


def channel_backend(cfg: RunConfig) -> Backend:
    """NCCL when the run is on GPUs, gloo otherwise: chosen from the config so both sides agree."""
    return "nccl" if cfg.cluster.use_gpu else "gloo"


def driver_wait_s(cfg: RunConfig) -> float:
    """How long the driver waits for the engines to join or receive a version before naming the late ones.

    In asynchronous mode an engine receives a version only after the generation it is busy with, which
    may take up to generation.timeout_s.
    """
    busy = cfg.generation.timeout_s if cfg.buffer.max_staleness > 0 else 0.0
    return cfg.broadcast.timeout_s + busy


def channel_timeout_s(cfg: RunConfig) -> float:
    """How long a member of the channel waits for the others in one collective. Under NCCL a collective
    past its timeout aborts the process instead of raising, so the group outwaits the driver by a minute:
    the driver's error naming the late engine comes first and shuts the run down cleanly."""
    return driver_wait_s(cfg) + 60.0


def plan_buckets(specs: list[Spec], bucket_bytes: int) -> list[list[int]]:
    """Indices of consecutive same-dtype tensors per bucket, each bucket about `bucket_bytes` at most."""
    buckets: list[list[int]] = []
    size, dtype = 0, None
    for i, (_, shape, dt) in enumerate(specs):
        nbytes = torch.Size(shape).numel() * torch.empty(0, dtype=getattr(torch, dt)).element_size()
        if not buckets or dt != dtype or size + nbytes > bucket_bytes:
            buckets.append([])
            size, dtype = 0, dt
        buckets[-1].append(i)
        size += nbytes
    return buckets


class WeightChannel:
    """One side of the group: `send` on rank 0 (the learner), `receive` on the engines."""

    def __init__(
        self, host: str, port: int, rank: int, world_size: int, epoch: int, timeout_s: float,
        device: str = "cpu", backend: Backend = "gloo",
    ) -> None:  # fmt: skip
        from torch.distributed import PrefixStore, TCPStore

        timeout = timedelta(seconds=timeout_s)
        self.rank, self.device, self.backend = rank, torch.device(device), backend
        if (backend == "nccl") != (self.device.type == "cuda"):
            raise ValueError(f"weight channel: backend {backend} cannot carry tensors on {device}")
        self._store = TCPStore(host, port, None, is_master=False, timeout=timeout, wait_for_workers=False)
        store = PrefixStore(f"openrs-weights/{epoch}", self._store)
        if backend == "nccl":  # GPU to GPU: buffers stay on the device
            from torch.distributed.distributed_c10d import ProcessGroupNCCL

            options = ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.group = ProcessGroupNCCL(store, rank, world_size, options)
        else:
            from torch.distributed.distributed_c10d import ProcessGroupGloo

            self.group = ProcessGroupGloo(store, rank, world_size, timeout)

    def send(self, tensors: Iterator[torch.Tensor], specs: list[Spec], bucket_bytes: int) -> tuple[int, str | None]:
        """Broadcast tensors (in `specs` order) bucket by bucket from rank 0; returns (bytes sent, error).

        A member lost mid-broadcast fails the collective. The tensors are still drawn to the end, without
        sending: under ZeRO-3 each one is a gather every learner rank takes part in, so stopping here would
        leave the other ranks waiting in a gather. The error is returned, and the driver reloads the engines
        through the object store."""
        sent, it, error = 0, iter(tensors), None
        for bucket in plan_buckets(specs, bucket_bytes):
            flat = torch.cat([next(it).reshape(-1).to(self.device) for _ in bucket])
            if error is not None:
                continue
            try:
                self.group.broadcast(flat, 0).wait()
                self._synchronize()  # one bucket in flight: bounded memory, honest timing
            except RuntimeError as err:  # torch.distributed's DistBackendError: a member left the group
                error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                continue
            sent += flat.numel() * flat.element_size()
        return sent, error

    def receive(self, specs: list[Spec], bucket_bytes: int) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) as buckets arrive from rank 0."""
        for bucket in plan_buckets(specs, bucket_bytes):
            shapes = [torch.Size(specs[i][1]) for i in bucket]
            dtype = getattr(torch, specs[bucket[0]][2])
            flat = torch.empty(sum(s.numel() for s in shapes), dtype=dtype, device=self.device)
            self.group.broadcast(flat, 0).wait()
            self._synchronize()
            for i, piece in zip(bucket, flat.split([s.numel() for s in shapes]), strict=True):
                yield specs[i][0], piece.view(shapes[bucket.index(i)])

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        """Shut the group down (its peers may already be gone: NCCL communicators are aborted, not drained)."""
        group, self.group = self.group, None
        if group is not None and self.backend == "nccl":
            group.abort()


def serve_store(port: int, timeout_s: float) -> object:
    """The TCPStore server on the sender's host; keep the returned object alive for the run."""
    from torch.distributed import TCPStore

    return TCPStore("0.0.0.0", port, None, is_master=True, timeout=timedelta(seconds=timeout_s), wait_for_workers=False)

"""A weight channel: one torch.distributed process group of learner rank 0 (rank 0) and the engines.

Gloo on CPU, NCCL between GPUs (written for GPU machines; the CPU tests exercise gloo). It is built the
way OpenRLHF builds its NCCL update group (a TCPStore served by the sender, a PrefixStore per membership
epoch, a standalone process group), so it lives beside DeepSpeed's and vLLM's own groups without
touching them. A process group cannot grow: when engines join or leave, the broadcast forms a new group
under a new epoch prefix on the same store.

Tensors travel in flat buckets of one dtype (bucket_size_mb), so the receiver holds at most one bucket
beside the model while vLLM's reload consumes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import torch

Spec = tuple[str, tuple[int, ...], str]  # (name, shape, dtype name)


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
        self, host: str, port: int, rank: int, world_size: int, epoch: int, timeout_s: float, device: str = "cpu"
    ) -> None:
        from torch.distributed import PrefixStore, TCPStore

        timeout = timedelta(seconds=timeout_s)
        self.rank, self.device = rank, torch.device(device)
        self._store = TCPStore(host, port, None, is_master=False, timeout=timeout, wait_for_workers=False)
        store = PrefixStore(f"openrs-weights/{epoch}", self._store)
        if self.device.type == "cuda":  # GPU to GPU: NCCL, buffers stay on the device
            from torch.distributed.distributed_c10d import ProcessGroupNCCL

            options = ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.group = ProcessGroupNCCL(store, rank, world_size, options)
        else:
            from torch.distributed.distributed_c10d import ProcessGroupGloo

            self.group = ProcessGroupGloo(store, rank, world_size, timeout)

    def send(self, tensors: Iterator[torch.Tensor], specs: list[Spec], bucket_bytes: int) -> int:
        """Broadcast tensors (in `specs` order) bucket by bucket from rank 0; returns bytes sent."""
        sent, it = 0, iter(tensors)
        for bucket in plan_buckets(specs, bucket_bytes):
            flat = torch.cat([next(it).reshape(-1).to(self.device) for _ in bucket])
            self.group.broadcast(flat, 0).wait()
            sent += flat.numel() * flat.element_size()
        return sent

    def receive(self, specs: list[Spec], bucket_bytes: int) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) as buckets arrive from rank 0."""
        for bucket in plan_buckets(specs, bucket_bytes):
            shapes = [torch.Size(specs[i][1]) for i in bucket]
            dtype = getattr(torch, specs[bucket[0]][2])
            flat = torch.empty(sum(s.numel() for s in shapes), dtype=dtype, device=self.device)
            self.group.broadcast(flat, 0).wait()
            for i, piece in zip(bucket, flat.split([s.numel() for s in shapes]), strict=True):
                yield specs[i][0], piece.view(shapes[bucket.index(i)])

    def close(self) -> None:
        """Drop the group (its peers may already be gone)."""
        self.group = None


def serve_store(port: int, timeout_s: float) -> object:
    """The TCPStore server on the sender's host; keep the returned object alive for the run."""
    from torch.distributed import TCPStore

    return TCPStore("0.0.0.0", port, None, is_master=True, timeout=timedelta(seconds=timeout_s), wait_for_workers=False)

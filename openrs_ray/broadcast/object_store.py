"""Weight broadcast through the Ray object store: rank 0 puts buckets, each engine pulls them.

Works across nodes without any extra process group, and a late-joining engine can catch up from the
same refs. The collective (NCCL/gloo) backend is the fast path for large models.
"""

from __future__ import annotations

import time

from openrs_ray.broadcast.base import WeightBroadcast
from openrs_ray.broadcast.protocols import WeightSink, WeightSource
from openrs_ray.types import WeightVersion


class ObjectStoreBroadcast(WeightBroadcast):
    """Versioned, bucketed publishing from learner rank 0 to all engines via ObjectRefs."""

    def __init__(self, learners: WeightSource, generators: WeightSink, version: int = 0) -> None:
        self.learners, self.generators, self.version = learners, generators, version

    def publish(self) -> tuple[WeightVersion, dict[str, float]]:
        t0 = time.perf_counter()
        meta, refs = self.learners.export_weights(self.version + 1)
        t_export = time.perf_counter() - t0
        self.generators.load_weights(refs, meta.version)
        seconds = time.perf_counter() - t0
        self.version = meta.version
        return meta, {
            "sync_s": seconds,
            "sync_export_s": t_export,
            "sync_bytes": float(meta.num_bytes),
            "sync_gbps": meta.num_bytes / seconds / 1e9 if seconds > 0 else 0.0,
        }

"""Ray cluster: join one (ray job submit, `cluster.address`) or start an embedded local one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from openrs_ray.config import ClusterConfig

RAY_WORKER_NICENESS = "RAY_worker_niceness"


@contextmanager
def _worker_niceness(niceness: int | None) -> Iterator[None]:
    """Ray starts its workers at niceness 15 (RAY_worker_niceness), so on a machine shared with other work
    the actors lose the CPU to everything else. The Ray processes ray.init starts read the variable from the
    environment they inherit; the driver's own environment is restored afterwards."""
    if niceness is None:
        yield
        return
    before = os.environ.get(RAY_WORKER_NICENESS)
    os.environ[RAY_WORKER_NICENESS] = str(niceness)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RAY_WORKER_NICENESS, None)
        else:
            os.environ[RAY_WORKER_NICENESS] = before


@contextmanager
def ray_cluster(cc: ClusterConfig) -> Iterator[None]:
    """Connect to or start Ray for the block; a cluster we started is stopped on exit, whatever happens.

    Inside a `ray job submit` job RAY_ADDRESS is set and ray.init joins that cluster. An already
    initialised Ray (tests, notebooks) is used as is and left running for its owner.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    joining = cc.address is not None or "RAY_ADDRESS" in os.environ
    kwargs: dict = {"address": cc.address, "log_to_driver": True}
    if not joining:
        kwargs.update(
            num_cpus=cc.num_cpus,
            object_store_memory=int(cc.object_store_memory_gb * 2**30),
            include_dashboard=False,
        )
    with _worker_niceness(None if joining else cc.worker_niceness):
        ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()

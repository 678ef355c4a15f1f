"""Learner ranks other than 0 never build the full weights: publishing (export_weights) on rank 1 copies
nothing under ZeRO-2 (it returns at once) and nothing under ZeRO-3 (it only takes part in the gathers),
while rank 0 copies every parameter. Copies are observed with a torch dispatch mode inside the real actor."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import ray

from openrs_ray.config import load_config
from openrs_ray.learners.group import LearnerGroup
from tests.conftest import REPO


def _counter():
    """A function run inside a learner actor (pickled by value): bytes of every tensor copy (`_to_copy`,
    `clone`) export_weights makes there."""

    def copied_bytes(learner, bucket_bytes: int) -> int:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        copies = (torch.ops.aten._to_copy.default, torch.ops.aten.clone.default)

        class CountCopies(TorchDispatchMode):
            nbytes = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if func in copies:
                    self.nbytes += out.numel() * out.element_size()
                return out

        with CountCopies() as counter:
            learner.export_weights(bucket_bytes)
        return counter.nbytes

    return copied_bytes


@pytest.mark.parametrize("stage", [2, 3])
def test_only_rank_0_copies_the_weights(ray_local: None, tiny_model: Path, stage: int) -> None:
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        [f"model.path={tiny_model}", "learner.num_learners=2", f"learner.zero_stage={stage}", "prompts_per_step=2"],
    )
    group = LearnerGroup(cfg)
    try:
        group.wait_ready()
        model_bytes = sum(math.prod(shape) * 4 for _, shape, _ in group.weight_specs())  # fp32
        rank0, rank1, count = *group.actors, _counter()
        if stage == 2:  # rank 1 alone: it must not wait for, or copy, anything
            assert ray.get(rank1.__ray_call__.remote(count, 1 << 20), timeout=60) == 0
            copied0 = ray.get(rank0.__ray_call__.remote(count, 1 << 20), timeout=120)
        else:  # collective: both ranks gather each parameter together
            refs = [a.__ray_call__.remote(count, 1 << 20) for a in (rank0, rank1)]
            copied0, copied1 = ray.get(refs, timeout=120)
            assert copied1 == 0, f"rank 1 copied {copied1} bytes under ZeRO-3"
        assert copied0 >= model_bytes  # the counter sees rank 0's full copy
    finally:
        group.shutdown()

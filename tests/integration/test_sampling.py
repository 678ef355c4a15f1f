"""Orchestrator modes on real actors: dynamic sampling with refills, and overlong masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from openrs_ray.stages.orchestrator import Orchestrator
from tests.integration.test_modes import _orchestrator


@pytest.fixture(scope="module")
def flat_rewards(ray_local: None, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    # Accuracy alone: a random tiny model is never right, so every group has equal rewards.
    orch = _orchestrator(
        tiny_model, tmp_path_factory.mktemp("dyn"), "rewards.functions=[{name: accuracy}]",
        "buffer.dynamic_sampling=true", "buffer.max_refill_rounds=2", "buffer.overlong=mask",
    )  # fmt: skip
    try:
        yield orch
    finally:
        orch.shutdown()


def test_dynamic_sampling_refills_then_gives_up(flat_rewards: Orchestrator) -> None:
    m = flat_rewards.step()
    assert m["refill_rounds"] == 2 and m["dropped_zero_variance"] == 2 + 2 + 2
    assert m["groups_trained"] == 0 and m["weight_version"] == 0  # nothing to learn: no update, no sync
    assert len(m["prompt_uids"]) == 6


def test_overlong_mask_trains_only_finished_completions(flat_rewards: Orchestrator) -> None:
    flat_rewards.cfg.buffer.dynamic_sampling = False
    m = flat_rewards.step()
    rows = m["groups_trained"] * 4
    truncated = round(m["truncated_ratio"] * rows)
    assert m["learner_tokens"] == m["completion_tokens"] - 32 * truncated

"""A user's loss from their own file, named by import path in learner.loss_type, drives a real DeepSpeed update."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_learners import _cfg, _train  # its fixed batch and learner config

USER_LOSS = """
from openrs_ray.learners.loss import bnpo

def ten_x(inputs):
    loss, metrics = bnpo(inputs)
    return 10.0 * loss, {**metrics, "user_loss_called": 1.0}
"""


def test_user_loss_changes_the_update(ray_local: None, tiny_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "my_losses.py"
    path.write_text(USER_LOSS)
    results = {}
    for loss_type in ("bnpo", f"{path}:ten_x"):
        group, (metrics,) = _train(_cfg(tiny_model, "learner.num_learners=1", f"learner.loss_type={loss_type}"), 1)
        group.shutdown()
        results[loss_type] = metrics
    base, user = results["bnpo"], results[f"{path}:ten_x"]
    assert "user_loss_called" not in base and user["user_loss_called"] == 1.0
    # Same weights, same batch: ten times the loss and (before clipping) ten times the gradient norm.
    assert user["loss"] == pytest.approx(10 * base["loss"], rel=1e-5)
    assert user["grad_norm"] == pytest.approx(10 * base["grad_norm"], rel=1e-3)
    assert base["grad_norm"] > 0

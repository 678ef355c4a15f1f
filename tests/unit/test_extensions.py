"""Losses and advantage estimators by name (registries), with hand-computed values, and from a user's file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from openrs_ray.buffer.advantages import ADVANTAGES, group_advantages, resolve_advantage
from openrs_ray.config import BufferConfig, ConfigError, LearnerConfig, load_config
from openrs_ray.config.sections import ADVANTAGE_SCALES, LOSS_TYPES
from openrs_ray.extensions import check_extensions
from openrs_ray.learners.loss import LOSSES, LossInputs, policy_loss, register_loss, resolve_loss

USER_CODE = """
import torch
from openrs_ray.learners.loss import bnpo

def double_bnpo(inputs):
    loss, metrics = bnpo(inputs)
    return 2.0 * loss, {**metrics, "doubled": 1.0}

def rank_advantage(rewards, group_size):
    return rewards.view(-1, group_size).argsort(dim=1).argsort(dim=1).float().view(-1)

def wrong_shape(rewards, group_size):
    return rewards[:1]

def no_args():
    return 0
"""


@pytest.fixture()
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_ext.py"
    path.write_text(USER_CODE)
    return path


def test_config_names_match_the_registries() -> None:
    assert set(LOSSES) == set(LOSS_TYPES) and set(ADVANTAGES) == set(ADVANTAGE_SCALES)


def test_rloo_hand_values() -> None:
    # group [1, 2, 6]: 1 - (2+6)/2 = -3, 2 - (1+6)/2 = -1.5, 6 - (1+2)/2 = 4.5; group [4, 4, 4]: all 0
    out = group_advantages(torch.tensor([1.0, 2.0, 6.0, 4.0, 4.0, 4.0]), 3, "rloo")
    assert out.tolist() == [-3.0, -1.5, 4.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.tensor([1.0, 2.0]), 1, "rloo")


def _gspo(diff: list[float], mask: list[float], adv: float) -> tuple[float, list[float]]:
    logprobs = torch.zeros(1, len(diff), requires_grad=True)
    old = -torch.tensor([diff])  # logprobs - old = diff
    loss, _ = policy_loss(logprobs, old, torch.tensor([adv]), torch.tensor([mask]), loss_type="gspo", epsilon=0.2)
    loss.backward()
    return loss.item(), logprobs.grad[0].tolist()


def test_gspo_hand_values() -> None:
    ln2 = math.log(2.0)
    # sequence ratio exp((ln2 + 0) / 2) = sqrt(2) > 1.2: clipped for A = +1 (loss -1.2, no gradient) ...
    loss, grad = _gspo([ln2, 0.0], [1.0, 1.0], 1.0)
    assert loss == pytest.approx(-1.2) and grad == [0.0, 0.0]
    # ... not for A = -1: loss = sqrt(2), d/dlogp_t = sqrt(2) * 1/2 per token
    loss, grad = _gspo([ln2, 0.0], [1.0, 1.0], -1.0)
    assert loss == pytest.approx(math.sqrt(2)) and grad == pytest.approx([math.sqrt(2) / 2] * 2)
    # a masked token changes nothing: ratio exp(ln2) = 2, A = -1 -> loss 2, gradient only on the real token
    loss, grad = _gspo([ln2, 5.0], [1.0, 0.0], -1.0)
    assert loss == pytest.approx(2.0) and grad == pytest.approx([2.0, 0.0])
    # ratio 1 (mean diff 0): loss -A, gradient -A / T per token
    loss, grad = _gspo([0.1, -0.1], [1.0, 1.0], 1.0)
    assert loss == pytest.approx(-1.0) and grad == pytest.approx([-0.5, -0.5])


def test_registered_and_user_losses(user_file: Path) -> None:
    lp = torch.tensor([[-1.0, -2.0, -0.5]])
    args = (lp, lp - 0.1, torch.tensor([1.0]), torch.tensor([[1.0, 1.0, 0.0]]))
    base, _ = policy_loss(*args, loss_type="bnpo")
    assert base.item() == pytest.approx(-math.exp(0.1))  # ratio e^0.1 < 1.2, token mean of -ratio * A
    user, metrics = policy_loss(*args, loss_type=f"{user_file}:double_bnpo")
    assert user.item() == pytest.approx(-2 * math.exp(0.1)) and metrics["doubled"] == 1.0

    @register_loss("test_half")
    def half(inp: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        return 0.5 * resolve_loss("bnpo")(inp)[0], {}

    try:
        assert policy_loss(*args, loss_type="test_half")[0].item() == pytest.approx(-0.5 * math.exp(0.1))
    finally:
        del LOSSES["test_half"]


def test_user_advantages(user_file: Path) -> None:
    out = group_advantages(torch.tensor([3.0, 1.0, 2.0, 0.0, 5.0, 4.0]), 3, f"{user_file}:rank_advantage")
    assert out.tolist() == [2.0, 0.0, 1.0, 0.0, 2.0, 1.0]
    with pytest.raises(ValueError, match=r"returned torch.Size\(\[1\]\), expected \(6,\)"):
        group_advantages(torch.zeros(6), 3, f"{user_file}:wrong_shape")


def test_bad_names_and_specs(user_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown loss_type 'nope'"):
        resolve_loss("nope")
    with pytest.raises(ValueError, match=r"learner.loss_type: .*file not found"):
        resolve_loss(f"{tmp_path}/absent.py:f")
    with pytest.raises(ValueError, match=r"buffer.advantage_scale: .*must take \(rewards, group_size\)"):
        resolve_advantage(f"{user_file}:no_args")
    with pytest.raises(ValueError, match="learner.loss_type: unknown 'ppo'"):
        LearnerConfig(loss_type="ppo")
    with pytest.raises(ValueError, match="buffer.advantage_scale: unknown 'median'"):
        BufferConfig(advantage_scale="median")
    monkeypatch.chdir(tmp_path)
    assert LearnerConfig(loss_type="my_ext.py:double_bnpo").loss_type == f"{user_file}:double_bnpo"


def test_start_up_check_names_the_key(user_file: Path, tmp_path: Path) -> None:
    ok = load_config("configs/smoke.yaml", [f"learner.loss_type={user_file}:double_bnpo"])
    check_extensions(ok)
    for key, spec in [
        ("learner.loss_type", f"{tmp_path}/absent.py:f"),
        ("buffer.advantage_scale", f"{user_file}:nope"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{key}: "):
            check_extensions(load_config("configs/smoke.yaml", [f"{key}={spec}"]))

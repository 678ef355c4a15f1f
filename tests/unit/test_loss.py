"""policy_loss: every reduction, clipping, metrics, KL and gradients against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from openrs_ray.learners.loss import policy_loss

F64 = torch.float64
# B=2, T=3; the last token of row 1 is padding, so rows have 3 and 2 real tokens (5 in all).
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=F64)
ADV = torch.tensor([1.0, -2.0], dtype=F64)
LOGP = torch.tensor([[-0.5, -1.0, -2.0], [-0.3, -0.7, -1.1]], dtype=F64)


def _close(actual: torch.Tensor | float, expected: float) -> None:
    assert_close(torch.as_tensor(actual, dtype=F64), torch.tensor(expected, dtype=F64), rtol=0, atol=1e-12)


# Ratio 1 everywhere: per-token loss = -min(A, A) = -A -> row 0 [-1, -1, -1], row 1 [2, 2, (2 padded)].
@pytest.mark.parametrize(
    ("loss_type", "kwargs", "expected"),
    [
        ("grpo", {}, (-3 / 3 + 4 / 2) / 2),  # row means -1 and 2 -> 0.5
        ("bnpo", {}, (-3 + 4) / 5),  # sum 1 over 5 tokens -> 0.2
        ("dr_grpo", {"max_completion_length": 4}, (-3 + 4) / (2 * 4)),  # 1 / 8 = 0.125
        ("dapo", {"num_items_in_batch": 10}, (-3 + 4) / 10),  # 0.1
    ],
)
def test_reductions_at_ratio_one(loss_type: str, kwargs: dict, expected: float) -> None:
    loss, metrics = policy_loss(LOGP, LOGP.clone(), ADV, MASK, loss_type=loss_type, **kwargs)
    _close(loss, expected)
    assert metrics == {"clip_ratio": 0.0, "clip_ratio_low": 0.0, "clip_ratio_high": 0.0, "ratio_mean": 1.0}


def test_default_loss_type_is_bnpo() -> None:
    loss, _ = policy_loss(LOGP, LOGP.clone(), ADV, MASK)
    _close(loss, 0.2)


def test_mask_accepts_bool_and_padded_token_is_ignored() -> None:
    # Changing the padded token's logprob or old logprob must not change anything.
    logp = LOGP.clone()
    logp[1, 2] = 5.0  # ratio e^(5 - old) at a padded position
    loss, metrics = policy_loss(logp, LOGP.clone(), ADV, MASK.bool(), loss_type="bnpo")
    _close(loss, 0.2)
    _close(metrics["ratio_mean"], 1.0)
    assert metrics["clip_ratio"] == 0.0


def _ratios(r: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """logprobs with exp(logprobs - old) = r, old = 0."""
    return torch.log(torch.tensor(r, dtype=F64)), torch.zeros(len(r), len(r[0]), dtype=F64)


# Clipping case, epsilon 0.2 -> clip range [0.8, 1.2]; A = [2, -1]; mask [[1,1,0],[1,1,1]].
# per token -min(r*A, clip(r)*A):
#   row 0 (A=2):  r=1.5 -> -min(3.0, 2.4)  = -2.4 (= -1.2*A, clipped high)
#                 r=0.5 -> -min(1.0, 1.6)  = -1.0 (unclipped: clipping low does not help A>0)
#                 r=3.0 -> padded
#   row 1 (A=-1): r=0.5 -> -min(-0.5, -0.8) = 0.8 (= -0.8*A, clipped low)
#                 r=1.5 -> -min(-1.5, -1.2) = 1.5 (unclipped)
#                 r=0.9 -> -min(-0.9, -0.9) = 0.9
CLIP_R = [[1.5, 0.5, 3.0], [0.5, 1.5, 0.9]]
CLIP_ADV = torch.tensor([2.0, -1.0], dtype=F64)
CLIP_MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=F64)


def test_clipping_bnpo_and_grpo() -> None:
    logp, old = _ratios(CLIP_R)
    loss, metrics = policy_loss(logp, old, CLIP_ADV, CLIP_MASK, loss_type="bnpo", epsilon=0.2)
    _close(loss, (-2.4 - 1.0 + 0.8 + 1.5 + 0.9) / 5)  # -0.2 / 5 = -0.04
    loss, _ = policy_loss(logp, old, CLIP_ADV, CLIP_MASK, loss_type="grpo", epsilon=0.2)
    _close(loss, ((-2.4 - 1.0) / 2 + (0.8 + 1.5 + 0.9) / 3) / 2)  # (-1.7 + 1.0667) / 2
    # Clip metrics over the 5 real tokens: high = (r > 1.2 & A > 0) -> only row 0's 1.5 (the padded 3.0
    # is not counted); low = (r < 0.8 & A < 0) -> only row 1's 0.5 (row 0's 0.5 has A > 0).
    _close(metrics["clip_ratio_high"], 1 / 5)
    _close(metrics["clip_ratio_low"], 1 / 5)
    _close(metrics["clip_ratio"], 2 / 5)
    # ratio_mean over real tokens: (1.5 + 0.5 + 0.5 + 1.5 + 0.9) / 5 = 0.98 (with the padded 3.0: 1.3167).
    _close(metrics["ratio_mean"], 4.9 / 5)


def test_clipped_tokens_get_no_gradient() -> None:
    # d(-r*A)/d logp = -r*A where unclipped; 0 where the clipped branch wins. bnpo divides by 5.
    logp, old = _ratios(CLIP_R)
    logp.requires_grad_(True)
    loss, _ = policy_loss(logp, old, CLIP_ADV, CLIP_MASK, loss_type="bnpo", epsilon=0.2)
    loss.backward()
    expected = torch.tensor([[0.0, -0.5 * 2, 0.0], [0.0, -1.5 * -1, -0.9 * -1]], dtype=F64) / 5
    assert_close(logp.grad, expected, rtol=0, atol=1e-12)


# epsilon_high only moves the upper bound. A = [2, -1], all tokens real.
#   epsilon 0.2 (range [0.8, 1.2]):  row 0 r=1.5 -> -2.4, r=1.25 -> -min(2.5, 2.4) = -2.4;
#                                     row 1 r=0.5 -> 0.8, r=1.5 -> 1.5.   sum -2.5, bnpo -0.625
#   epsilon_high 0.28 ([0.8, 1.28]): row 0 r=1.5 -> -min(3.0, 2.56) = -2.56, r=1.25 -> -2.5 (unclipped);
#                                     row 1 unchanged 0.8, 1.5.            sum -2.76, bnpo -0.69
@pytest.mark.parametrize(
    ("epsilon_high", "expected_loss", "high"),
    [(None, (-2.4 - 2.4 + 0.8 + 1.5) / 4, 2 / 4), (0.28, (-2.56 - 2.5 + 0.8 + 1.5) / 4, 1 / 4)],
)
def test_epsilon_high_moves_only_upper_bound(epsilon_high: float | None, expected_loss: float, high: float) -> None:
    logp, old = _ratios([[1.5, 1.25], [0.5, 1.5]])
    adv, mask = torch.tensor([2.0, -1.0], dtype=F64), torch.ones(2, 2, dtype=F64)
    loss, metrics = policy_loss(logp, old, adv, mask, loss_type="bnpo", epsilon=0.2, epsilon_high=epsilon_high)
    _close(loss, expected_loss)
    _close(metrics["clip_ratio_high"], high)
    _close(metrics["clip_ratio_low"], 1 / 4)  # row 1's 0.5 with A < 0, in both cases
    _close(metrics["clip_ratio"], high + 1 / 4)


# KL: logp = old (ratio 1) and ref - logp = [[0.5, 0, 0], [-0.5, 0, 0.7 (padded)]].
# k3(d) = e^d - d - 1: k3(0.5) = 1.6487213 - 1.5 = 0.1487213; k3(-0.5) = 0.6065307 - 0.5 = 0.1065307; k3(0) = 0.
K3_POS = math.exp(0.5) - 1.5
K3_NEG = math.exp(-0.5) - 0.5
REF_DIFF = torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.7]], dtype=F64)


def test_k3_hand_values() -> None:
    _close(K3_POS, 0.1487212707)
    _close(round(K3_NEG, 10), 0.1065306597)


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        # 0.5 (ratio-1 grpo value) + beta * mean of row means (k3(0.5)/3 + k3(-0.5)/2) / 2
        ("grpo", 0.5 + 0.1 * (K3_POS / 3 + K3_NEG / 2) / 2),
        # 0.2 (ratio-1 bnpo value) + beta * (k3(0.5) + k3(-0.5)) / 5
        ("bnpo", 0.2 + 0.1 * (K3_POS + K3_NEG) / 5),
    ],
)
def test_kl_penalty(loss_type: str, expected: float) -> None:
    loss, metrics = policy_loss(
        LOGP, LOGP.clone(), ADV, MASK, loss_type=loss_type, beta=0.1, ref_logprobs=LOGP + REF_DIFF
    )
    _close(loss, expected)
    # kl metric: mean over sequences of per-sequence token means; the padded 0.7 is excluded.
    _close(metrics["kl"], (K3_POS / 3 + K3_NEG / 2) / 2)  # (0.0495738 + 0.0532653) / 2 = 0.0514195
    _close(round(metrics["kl"], 7), 0.0514195)


def test_no_kl_metric_when_beta_zero() -> None:
    _, metrics = policy_loss(LOGP, LOGP.clone(), ADV, MASK, ref_logprobs=LOGP + REF_DIFF)
    assert "kl" not in metrics


def test_gradient_at_ratio_one_bnpo() -> None:
    # loss = sum(-exp(logp - old) * A * mask) / 5 -> d/d logp = -A * mask / 5 at ratio 1:
    # row 0 (A=1): -0.2 each; row 1 (A=-2): +0.4, +0.4, 0 (padded).
    logp = LOGP.clone().requires_grad_(True)
    loss, _ = policy_loss(logp, LOGP.clone(), ADV, MASK, loss_type="bnpo")
    loss.backward()
    assert_close(logp.grad, torch.tensor([[-0.2, -0.2, -0.2], [0.4, 0.4, 0.0]], dtype=F64), rtol=0, atol=1e-12)


def test_beta_without_ref_raises() -> None:
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(LOGP, LOGP, ADV, MASK, beta=0.04)


def test_dr_grpo_without_max_completion_length_raises() -> None:
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(LOGP, LOGP, ADV, MASK, loss_type="dr_grpo")


@pytest.mark.parametrize("num_items", [None, 0])
def test_dapo_without_num_items_raises(num_items: int | None) -> None:
    with pytest.raises(ValueError, match="num_items_in_batch"):
        policy_loss(LOGP, LOGP, ADV, MASK, loss_type="dapo", num_items_in_batch=num_items)


def test_unknown_loss_type_raises() -> None:
    with pytest.raises(ValueError, match="unknown loss_type"):
        policy_loss(LOGP, LOGP, ADV, MASK, loss_type="ppo")  # type: ignore[arg-type]

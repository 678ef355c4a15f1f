"""The GRPO policy loss family, with TRL's numerics. Pure torch: tests call it without Ray."""

from __future__ import annotations

from typing import Literal

import torch

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: LossType = "bnpo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    max_completion_length: int | None = None,
    num_items_in_batch: int | float | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy-gradient loss plus an optional k3 KL penalty.

    logprobs, old_logprobs, ref_logprobs, mask: [B, T] over completion tokens; advantages: [B].
    Reductions follow TRL: grpo = mean over sequences of each sequence's token mean;
    bnpo = sum / tokens; dr_grpo = sum / (B * max_completion_length); dapo = sum / num_items_in_batch.
    is_weights [B, T] (detached, e.g. min(exp(old - sampling), cap)) scale the policy-gradient term only.
    """
    mask = mask.to(logprobs.dtype)  # [B, T]
    hi = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logprobs - old_logprobs)  # [B, T]
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + hi)  # [B, T]
    adv = advantages.unsqueeze(1)  # [B, 1]
    per_token = -torch.min(ratio * adv, clipped * adv)  # [B, T]
    if is_weights is not None:  # truncated importance sampling against the sampling engine, as TRL
        per_token = per_token * is_weights  # [B, T]

    kl = None
    if beta > 0.0:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs ref_logprobs")
        diff = ref_logprobs - logprobs  # [B, T]
        kl = torch.exp(diff) - diff - 1.0  # k3 estimator, [B, T]
        per_token = per_token + beta * kl

    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type dr_grpo needs max_completion_length")
        loss = (per_token * mask).sum() / (per_token.size(0) * max_completion_length)
    elif loss_type == "dapo":
        if not num_items_in_batch:
            raise ValueError("loss_type dapo needs num_items_in_batch (completion tokens in the global batch)")
        loss = (per_token * mask).sum() / num_items_in_batch
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")

    with torch.no_grad():
        is_low = (ratio < 1.0 - epsilon) & (adv < 0)  # clipped from below, where it matters
        is_high = (ratio > 1.0 + hi) & (adv > 0)
        metrics = {
            "clip_ratio": _masked_mean((is_low | is_high).to(mask.dtype), mask).item(),
            "clip_ratio_low": _masked_mean(is_low.to(mask.dtype), mask).item(),
            "clip_ratio_high": _masked_mean(is_high.to(mask.dtype), mask).item(),
            "ratio_mean": _masked_mean(ratio, mask).item(),
        }
        if is_weights is not None:
            metrics["is_weight_mean"] = _masked_mean(is_weights, mask).item()
        if kl is not None:
            seq_kl = (kl * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]
            metrics["kl"] = seq_kl.mean().item()
    return loss, metrics

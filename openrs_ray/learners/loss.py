"""The policy losses by name, with TRL's numerics. Pure torch: tests call them without Ray.

Every loss is a function of one `LossInputs` returning (scalar loss, metrics), registered with
`@register_loss(name)`; `learner.loss_type` picks one by name, or names a user's own function by import path
("my_losses.py:gspo", see openrs_ray.plugins). The GRPO family shares the clipped token surrogate
(`clipped_token_loss`) and differs only in how it reduces over tokens; gspo clips a sequence-level ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from openrs_ray.plugins import resolve

LossFn = Callable[["LossInputs"], tuple[torch.Tensor, dict[str, float]]]
LOSSES: dict[str, LossFn] = {}


@dataclass
class LossInputs:
    """What a loss sees for one micro-batch. Tensors are [B, T] over completion tokens; advantages [B]."""

    logprobs: torch.Tensor  # under the policy being trained (with grad)
    old_logprobs: torch.Tensor  # under the policy that the ratio is taken against (detached)
    advantages: torch.Tensor
    mask: torch.Tensor  # 1 for real completion tokens
    epsilon: float = 0.2
    epsilon_high: float | None = None  # None: epsilon
    beta: float = 0.0  # k3 KL penalty weight (needs ref_logprobs)
    ref_logprobs: torch.Tensor | None = None
    max_completion_length: int | None = None  # dr_grpo's constant normaliser
    num_items_in_batch: int | float | None = None  # dapo: completion tokens of the global batch (per rank)
    is_weights: torch.Tensor | None = None  # detached importance weights against the sampling engine
    # The supervised objectives (learners/objectives.py) take the same inputs:
    grad_accumulation_steps: int = 1  # micro-batches per optimizer step (DeepSpeed divides each loss by it)
    teacher_logprobs: torch.Tensor | None = None  # [B, T, K] token-level KD: the teacher's partition logprobs
    kd_divergence: str = "forward_kl"  # token-level KD: forward_kl or reverse_kl


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Register `fn(inputs: LossInputs) -> (loss, metrics)` under `name`."""

    def register(fn: LossFn) -> LossFn:
        LOSSES[name] = fn
        return fn

    return register


def resolve_loss(name: str) -> LossFn:
    """The loss registered as `name`, or the user function an import path names (a ValueError otherwise)."""
    return resolve(LOSSES, name, "learner.loss_type", "loss_type", 1, "(inputs: LossInputs) and return (loss, metrics)")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def _kl(inp: LossInputs) -> torch.Tensor | None:
    """k3 estimator of KL(policy || reference) per token, [B, T]; None without a penalty."""
    if inp.beta <= 0.0:
        return None
    if inp.ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs")
    diff = inp.ref_logprobs - inp.logprobs  # [B, T]
    return torch.exp(diff) - diff - 1.0


def _clip_metrics(inp: LossInputs, ratio: torch.Tensor, kl: torch.Tensor | None) -> dict[str, float]:
    """Clip fractions (where clipping changes the gradient), mean ratio, IS weight and KL, token means."""
    mask = inp.mask.to(inp.logprobs.dtype)
    hi = inp.epsilon if inp.epsilon_high is None else inp.epsilon_high
    adv = inp.advantages.unsqueeze(1)
    with torch.no_grad():
        is_low = ((ratio < 1.0 - inp.epsilon) & (adv < 0)).expand_as(mask)  # clipped from below, where it matters
        is_high = ((ratio > 1.0 + hi) & (adv > 0)).expand_as(mask)
        metrics = {
            "clip_ratio": _masked_mean((is_low | is_high).to(mask.dtype), mask).item(),
            "clip_ratio_low": _masked_mean(is_low.to(mask.dtype), mask).item(),
            "clip_ratio_high": _masked_mean(is_high.to(mask.dtype), mask).item(),
            "ratio_mean": _masked_mean(ratio.expand_as(mask), mask).item(),
        }
        if inp.is_weights is not None:
            metrics["is_weight_mean"] = _masked_mean(inp.is_weights, mask).item()
        if kl is not None:
            metrics["kl"] = ((kl * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean().item()
    return metrics


def clipped_token_loss(inp: LossInputs, ratio: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate per token (plus the KL penalty), [B, T], before any reduction, and its metrics.

    `ratio` defaults to the token ratio exp(logprobs - old_logprobs); a [B, 1] sequence ratio (gspo) broadcasts.
    """
    hi = inp.epsilon if inp.epsilon_high is None else inp.epsilon_high
    if ratio is None:
        ratio = torch.exp(inp.logprobs - inp.old_logprobs)  # [B, T]
    clipped = torch.clamp(ratio, 1.0 - inp.epsilon, 1.0 + hi)
    adv = inp.advantages.unsqueeze(1)  # [B, 1]
    per_token = -torch.min(ratio * adv, clipped * adv).expand_as(inp.logprobs)  # [B, T]
    if inp.is_weights is not None:  # truncated importance sampling against the sampling engine, as TRL
        per_token = per_token * inp.is_weights
    kl = _kl(inp)
    if kl is not None:
        per_token = per_token + inp.beta * kl
    return per_token, _clip_metrics(inp, ratio, kl)


def _token_sum(inp: LossInputs) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    per_token, metrics = clipped_token_loss(inp)
    mask = inp.mask.to(inp.logprobs.dtype)
    return per_token * mask, mask, metrics


@register_loss("grpo")
def grpo(inp: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over sequences of each sequence's token mean (TRL grpo)."""
    masked, mask, metrics = _token_sum(inp)
    return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean(), metrics


@register_loss("bnpo")
def bnpo(inp: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over the micro-batch's tokens / its token count (TRL bnpo)."""
    masked, mask, metrics = _token_sum(inp)
    return masked.sum() / mask.sum().clamp(min=1.0), metrics


@register_loss("dr_grpo")
def dr_grpo(inp: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum / (B * max_completion_length) (Dr.GRPO: a constant normaliser)."""
    if inp.max_completion_length is None:
        raise ValueError("loss_type dr_grpo needs max_completion_length")
    masked, _, metrics = _token_sum(inp)
    return masked.sum() / (masked.size(0) * inp.max_completion_length), metrics


@register_loss("dapo")
def dapo(inp: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum / completion tokens of the global batch (DAPO's token-level mean)."""
    if not inp.num_items_in_batch:
        raise ValueError("loss_type dapo needs num_items_in_batch (completion tokens in the global batch)")
    masked, _, metrics = _token_sum(inp)
    return masked.sum() / inp.num_items_in_batch, metrics


@register_loss("gspo")
def gspo(inp: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO: one importance ratio per sequence, exp(token mean of logprobs - old_logprobs), clipped; the loss is
    the mean over sequences of each sequence's token mean (with the KL penalty, when any, per token)."""
    mask = inp.mask.to(inp.logprobs.dtype)
    tokens = mask.sum(-1, keepdim=True).clamp(min=1.0)  # [B, 1]
    seq_ratio = torch.exp(((inp.logprobs - inp.old_logprobs) * mask).sum(-1, keepdim=True) / tokens)  # [B, 1]
    per_token, metrics = clipped_token_loss(inp, seq_ratio)
    return ((per_token * mask).sum(-1, keepdim=True) / tokens).mean(), metrics


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str = "bnpo",
    **options: object,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss `loss_type` names (a registered name or an import path) on these tensors; `options` are the
    other LossInputs fields (epsilon, epsilon_high, beta, ref_logprobs, max_completion_length,
    num_items_in_batch, is_weights)."""
    return resolve_loss(loss_type)(LossInputs(logprobs, old_logprobs, advantages, mask, **options))  # type: ignore[arg-type]

"""Advantage estimators by name: group-relative (GRPO, as TRL computes it) and leave-one-out (RLOO).

Every estimator is `fn(rewards: Tensor[N], group_size: int) -> Tensor[N]` over rewards laid out group after
group, registered with `@register_advantage(name)`; `buffer.advantage_scale` picks one by name, or names a
user's own function by import path ("my_advantages.py:fn", see openrs_ray.plugins).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from openrs_ray.plugins import resolve

STD_EPS = 1e-4  # TRL's constant: (r - mean) / (std + 1e-4)

AdvantageFn = Callable[[torch.Tensor, int], torch.Tensor]
ADVANTAGES: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Register `fn(rewards [N], group_size) -> advantages [N]` under `name`."""

    def register(fn: AdvantageFn) -> AdvantageFn:
        ADVANTAGES[name] = fn
        return fn

    return register


def resolve_advantage(name: str) -> AdvantageFn:
    """The estimator registered as `name`, or the user function an import path names (ValueError otherwise)."""
    expects = "(rewards, group_size) and return one advantage per reward"
    return resolve(ADVANTAGES, name, "buffer.advantage_scale", "advantage scale", 2, expects)


def _centred(rewards: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    grouped = rewards.view(-1, group_size)  # [G, group_size]
    return grouped, (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)  # [N]


@register_advantage("group")
def group_std(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - group_mean) / (group_std + 1e-4), unbiased std (torch's default), as TRL."""
    grouped, centred = _centred(rewards, group_size)
    return centred / (grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1) + STD_EPS)


@register_advantage("batch")
def batch_std(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - group_mean) / (std of the whole batch + 1e-4)."""
    _, centred = _centred(rewards, group_size)
    return centred / (rewards.std().expand_as(rewards) + STD_EPS)


@register_advantage("none")
def mean_only(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """r - group_mean (Dr.GRPO)."""
    return _centred(rewards, group_size)[1]


@register_advantage("rloo")
def rloo(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """r_i - mean of the other rewards of its group (RLOO's leave-one-out baseline) = G/(G-1) (r_i - mean)."""
    if group_size < 2:
        raise ValueError("advantage_scale rloo needs at least 2 samples per group")
    return _centred(rewards, group_size)[1] * (group_size / (group_size - 1))


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """Advantages for rewards [N] laid out group after group (N = num_groups * group_size), by the estimator
    `scale` names. Returns [N]."""
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be [N] with N a multiple of group_size={group_size}, got {rewards.shape}")
    out = resolve_advantage(scale)(rewards, group_size)
    if not isinstance(out, torch.Tensor) or out.shape != rewards.shape:
        raise ValueError(
            f"advantage estimator {scale!r} returned {getattr(out, 'shape', type(out))}, "
            f"expected {tuple(rewards.shape)}"
        )
    return out

"""Group-relative advantages (GRPO), as TRL computes them."""

from __future__ import annotations

from typing import Literal

import torch

STD_EPS = 1e-4  # TRL's constant: (r - mean) / (std + 1e-4)


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: Literal["group", "batch", "none"] = "group"
) -> torch.Tensor:
    """Advantages for rewards laid out group after group.

    rewards: [N] with N = num_groups * group_size. Returns [N].
    - "group": (r - group_mean) / (group_std + 1e-4), unbiased std (torch's default), as TRL;
    - "batch": the std of the whole batch instead of the group's;
    - "none":  only subtract the group mean (Dr.GRPO).
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be [N] with N a multiple of group_size={group_size}, got {rewards.shape}")
    grouped = rewards.view(-1, group_size)  # [G, group_size]
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)  # [N]
    if scale == "none":
        return centred
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1)  # [N]
    elif scale == "batch":
        std = rewards.std().expand_as(rewards)  # [N]
    else:
        raise ValueError(f"unknown advantage scale {scale!r}; expected group, batch or none")
    return centred / (std + STD_EPS)

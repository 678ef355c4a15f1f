"""group_advantages: exact, hand-computed values for each scale (TRL's (r - mean) / (std + 1e-4))."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from openrs_ray.buffer.advantages import group_advantages

# Two groups of 4 with different spreads.
# Group A [1, 0, 0, 1]: mean 0.5, deviations [+.5, -.5, -.5, +.5], sum of squares 1,
#   unbiased var 1/3, std sqrt(1/3) = 0.5773503.
# Group B [3, 1, 2, 6]: mean 3, deviations [0, -2, -1, +3], sum of squares 0+4+1+9 = 14,
#   unbiased var 14/3, std sqrt(14/3) = 2.1602469.
REWARDS = [1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 2.0, 6.0]
CENTRED = [0.5, -0.5, -0.5, 0.5, 0.0, -2.0, -1.0, 3.0]
STD_A = math.sqrt(1 / 3)
STD_B = math.sqrt(14 / 3)


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_group_scale_two_groups_different_spreads() -> None:
    adv = group_advantages(_t(REWARDS), group_size=4, scale="group")
    # Group A: +-0.5 / (0.5773503 + 1e-4) = +-0.8658754; group B: [0, -2, -1, 3] / (2.1602469 + 1e-4),
    # so its last entry is 3 / 2.1603469 = 1.3886659.
    a = 0.5 / (STD_A + 1e-4)
    expected = [a, -a, -a, a] + [d / (STD_B + 1e-4) for d in (0.0, -2.0, -1.0, 3.0)]
    assert_close(adv, _t(expected), rtol=0, atol=1e-12)
    assert_close(adv[0], torch.tensor(0.8658754, dtype=torch.float64), rtol=0, atol=1e-7)
    assert_close(adv[7], torch.tensor(1.3886659, dtype=torch.float64), rtol=0, atol=1e-7)
    assert adv.shape == (8,)


def test_group_scale_float32_matches_hand_values() -> None:
    adv = group_advantages(torch.tensor(REWARDS), group_size=4)  # default scale is "group"
    assert adv.dtype == torch.float32
    a = 0.5 / (STD_A + 1e-4)
    expected = [a, -a, -a, a] + [d / (STD_B + 1e-4) for d in (0.0, -2.0, -1.0, 3.0)]
    assert_close(adv, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_zero_variance_group_is_exactly_zero() -> None:
    # Group [2, 2, 2, 2]: mean 2, std 0 -> 0 / (0 + 1e-4) = 0 exactly; the other group is unaffected.
    adv = group_advantages(_t([2.0, 2.0, 2.0, 2.0, 1.0, 0.0, 0.0, 1.0]), group_size=4, scale="group")
    assert torch.equal(adv[:4], torch.zeros(4, dtype=torch.float64))
    a = 0.5 / (STD_A + 1e-4)
    assert_close(adv[4:], _t([a, -a, -a, a]), rtol=0, atol=1e-12)


def test_batch_scale_uses_whole_batch_unbiased_std() -> None:
    # Centred by each group's mean (as "group"), but scaled by the batch std:
    # batch mean 14/8 = 1.75; sum of squares 52 - 8 * 1.75^2 = 52 - 24.5 = 27.5; unbiased var 27.5/7,
    # std sqrt(27.5/7) = 1.9820624, so 3 / (1.9820624 + 1e-4) = 1.5134986.
    adv = group_advantages(_t(REWARDS), group_size=4, scale="batch")
    std = math.sqrt(27.5 / 7)
    assert_close(adv, _t([c / (std + 1e-4) for c in CENTRED]), rtol=0, atol=1e-12)
    assert_close(adv[7], torch.tensor(1.5134986, dtype=torch.float64), rtol=0, atol=1e-7)


def test_batch_scale_zero_variance_group_still_zero() -> None:
    # Group [2,2,2,2] centres to 0 whatever the (non-zero) batch std is.
    adv = group_advantages(_t([2.0, 2.0, 2.0, 2.0, 1.0, 0.0, 0.0, 1.0]), group_size=4, scale="batch")
    assert torch.equal(adv[:4], torch.zeros(4, dtype=torch.float64))


def test_none_scale_only_centres() -> None:
    # Dr.GRPO: r - group mean, no division at all.
    adv = group_advantages(_t(REWARDS), group_size=4, scale="none")
    assert torch.equal(adv, _t(CENTRED))


def test_single_group_equals_group_of_whole_batch() -> None:
    # With one group, "group" and "batch" scale by the same std: [3,1,2,6] -> [0,-2,-1,3] / (std_B + 1e-4).
    r = _t([3.0, 1.0, 2.0, 6.0])
    expected = _t([d / (STD_B + 1e-4) for d in (0.0, -2.0, -1.0, 3.0)])
    assert_close(group_advantages(r, 4, "group"), expected, rtol=0, atol=1e-12)
    assert_close(group_advantages(r, 4, "batch"), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("rewards", "group_size"),
    [
        (torch.zeros(6), 4),  # 6 is not a multiple of 4
        (torch.zeros(7), 2),
        (torch.zeros(2, 4), 4),  # 2-D input
        (torch.zeros(8, 1), 4),
    ],
)
def test_bad_shapes_raise(rewards: torch.Tensor, group_size: int) -> None:
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(rewards, group_size)


def test_unknown_scale_raises() -> None:
    with pytest.raises(ValueError, match="unknown advantage scale"):
        group_advantages(_t(REWARDS), 4, scale="median")  # type: ignore[arg-type]

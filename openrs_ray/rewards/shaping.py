"""Shaping rewards from Open-RS: output format, think-tag counts and length-aware cosine scaling.

All functions are pure and cheap (string counting and one cosine), so they run inline in the
verifier without any timeout protection.
"""

from __future__ import annotations

import math

__all__ = ["cosine_reward", "format_reward", "overlong_penalty", "tag_count_reward"]

_THINK_OPEN = "<think>\n"
_THINK_CLOSE = "\n</think>\n"


def format_reward(completion: str) -> float:
    """Return 1.0 if the completion closes its reasoning exactly once with "\\n</think>\\n", else 0.0.

    Only the closing tag is checked because the DeepSeek-R1-Distill chat template already ends the
    prompt with "<think>\\n", so the opening tag is usually not part of the completion.
    """
    return 1.0 if completion.count(_THINK_CLOSE) == 1 else 0.0


def tag_count_reward(completion: str) -> float:
    """Return 0.5 for exactly one "<think>\\n" plus 0.5 for exactly one "\\n</think>\\n".

    Partial credit gives a gradient towards the format even before the model gets it fully right.
    """
    score = 0.0
    if completion.count(_THINK_OPEN) == 1:
        score += 0.5
    if completion.count(_THINK_CLOSE) == 1:
        score += 0.5
    return score


def cosine_reward(
    correct: bool,
    length: int,
    max_len: int,
    *,
    min_value_wrong: float = 0.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    clamp: bool = True,
) -> float:
    """Length-scaled correctness reward (Open-RS / "Demystifying Long CoT" cosine schedule).

    r = lo + 0.5 * (hi - lo) * (1 + cos(pi * L / max_len)), with L clamped to [0, max_len] when `clamp`.
    Open-RS did not clamp (`clamp=False`): past max_len the cosine keeps going, with period 2 * max_len,
    so a correct answer of length 2 * max_len scores max_value_correct again.
    Correct answers get hi=max_value_correct at L=0 falling to lo=min_value_correct at max_len
    (short right answers are preferred); wrong answers get hi=min_value_wrong at L=0 falling to
    lo=max_value_wrong at max_len (long wrong answers are punished hardest). The "wrong" names are
    Open-RS's: max_value_wrong is the magnitude-wise largest penalty, hence the lower bound.
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    # Truncated generations can report more tokens than the budget; beyond it the clamped reward is flat.
    clamped = min(max(length, 0), max_len) if clamp else length
    if correct:
        lo, hi = min_value_correct, max_value_correct
    else:
        lo, hi = max_value_wrong, min_value_wrong
    return lo + 0.5 * (hi - lo) * (1.0 + math.cos(math.pi * clamped / max_len))


def overlong_penalty(length: int, max_len: int, buffer_len: int, penalty: float = 1.0) -> float:
    """DAPO's soft overlong punishment: 0 up to max_len - buffer_len, then a linear ramp to -penalty at max_len.

    With buffer_len = 0 it is a hard -penalty for completions that reached max_len (were truncated).
    """
    start = max_len - buffer_len
    if length < start or (buffer_len == 0 and length < max_len):
        return 0.0
    if buffer_len == 0 or length >= max_len:
        return -penalty
    return -penalty * (length - start) / buffer_len

"""Language-consistency reward: share of letters outside the prompt's script, by hand."""

from __future__ import annotations

import pytest

from openrs_ray.rewards import RewardContext, score_sample
from openrs_ray.rewards.language import language_drift, script_of


def test_script_of() -> None:
    assert script_of("a") == "LATIN" and script_of("é") == "LATIN"
    assert script_of("数") == "CJK" and script_of("の") == "CJK" and script_of("한") == "HANGUL"
    assert script_of("ж") == "CYRILLIC"
    assert script_of("π") is None and script_of("7") is None and script_of(" ") is None and script_of("+") is None


@pytest.mark.parametrize(
    ("prompt", "completion", "share"),
    [
        ("What is 2+2?", "The answer is four", 0.0),
        ("What is 2+2?", "abcd数学", 2 / 6),  # 4 Latin letters, 2 CJK letters
        ("What is 2+2?", "数学", 1.0),
        ("计算 2+2", "答案是 4", 0.0),  # a Chinese prompt answered in Chinese
        ("计算 2+2", "ab答案", 2 / 4),
        ("2+2=?", "数学 ab", 2 / 4),  # no letters in the prompt: Latin is home
        ("What is 2+2?", "", 0.0),
        ("What is 2+2?", "π r^2 = 4", 0.0),  # π is neutral; the one letter left, r, is Latin
    ],
)
def test_language_drift(prompt: str, completion: str, share: float) -> None:
    assert language_drift(prompt, completion) == pytest.approx(share, abs=1e-12)


def test_language_reward_is_a_weighted_penalty() -> None:
    ctx = RewardContext("abcd数学", "4", 6, 100, prompt="What is 2+2?")
    total, parts = score_sample(ctx, {"language": 0.5})
    assert parts == {"language": pytest.approx(-1 / 3)}
    assert total == pytest.approx(-1 / 6)

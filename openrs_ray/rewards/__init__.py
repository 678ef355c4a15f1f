"""Reward functions: answer correctness (math-verify), format shaping and length-aware cosine scaling."""

from openrs_ray.rewards.math_answer import UnparsableGold, accuracy_reward, parse_gold
from openrs_ray.rewards.registry import REWARD_FUNCTIONS, RewardContext, score_sample, validate_reward_names
from openrs_ray.rewards.shaping import cosine_reward, format_reward, tag_count_reward

__all__ = [
    "REWARD_FUNCTIONS",
    "RewardContext",
    "UnparsableGold",
    "accuracy_reward",
    "cosine_reward",
    "format_reward",
    "parse_gold",
    "score_sample",
    "tag_count_reward",
    "validate_reward_names",
]

"""Named reward functions and the weighted combination used to score one sample.

Config files name rewards ("accuracy", "format", "tag_count", "cosine", "language", or a user's own function,
see rewards/custom.py) with weights; this module maps names to functions of a single RewardContext so every
reward sees the same inputs. Built-ins and user functions are entries of the same table (`@reward(name)`).
A function returns None when it does not apply to a sample: that sample adds nothing to the total and is left
out of the component's mean (as in TRL).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from openrs_ray.rewards import language, math_answer, shaping

__all__ = [
    "BUILTIN_REWARDS",
    "REWARD_FUNCTIONS",
    "RewardContext",
    "SampleReward",
    "reward",
    "score_sample",
    "validate_reward_names",
]


@dataclass(frozen=True)
class RewardContext:
    """Everything a reward function may look at for one completion."""

    completion: str
    gold: str
    length: int  # completion length for the cosine reward, in tokens or characters (rewards.cosine_length_unit)
    max_len: int  # length at which the cosine reward reaches its end value
    prompt: str = ""  # the prompt text, for the language-consistency reward
    mode: math_answer.AccuracyMode = "lenient"  # rewards.accuracy_mode
    unparsable_gold: Literal["drop", "reward_one"] = "drop"  # rewards.unparsable_gold
    clamp: bool = True  # rewards.cosine_clamp
    token_count: int = 0  # completion length in tokens (user rewards get it as completion_token_counts)
    columns: dict[str, Any] = field(default_factory=dict)  # the prompt's dataset row, for user rewards

    @functools.cached_property
    def accuracy(self) -> float:
        """Answer correctness (1.0/0.0), computed at most once per context.

        Memoised on the instance because it is by far the most expensive reward (SymPy) and both
        "accuracy" and "cosine" need it. cached_property writes the instance __dict__ directly, so it
        works on a frozen dataclass and leaves equality/hashing (fields only) untouched. The module
        attribute is looked up at call time so tests can count calls. UnparsableGold is not cached
        and propagates to the caller.
        """
        return math_answer.accuracy_reward(self.completion, self.gold, mode=self.mode)

    @functools.cached_property
    def cosine_correct(self) -> bool:
        """Correctness inside the cosine reward: accuracy, or (open_rs) Open-RS's cosine variant of it."""
        if self.mode == "open_rs":
            return math_answer.open_rs_cosine_correct(self.completion, self.gold)
        return self.accuracy == 1.0

    def or_reward_one(self, reward: Callable[[], float]) -> float:
        """`reward()`, or 1.0 for an unparsable gold when rewards.unparsable_gold=reward_one ([code] Open-RS)."""
        try:
            return reward()
        except math_answer.UnparsableGold:
            if self.unparsable_gold == "reward_one":
                return 1.0
            raise


SampleReward = Callable[["RewardContext"], float | None]
REWARD_FUNCTIONS: dict[str, SampleReward] = {}


def reward(name: str) -> Callable[[SampleReward], SampleReward]:
    """Register `fn(ctx) -> float | None` under `name` (built-ins here; user functions via rewards/custom.py)."""

    def register(fn: SampleReward) -> SampleReward:
        REWARD_FUNCTIONS[name] = fn
        return fn

    return register


@reward("accuracy")
def _accuracy(ctx: RewardContext) -> float:
    """Registry entry: 1.0 if the final answer matches the gold, else 0.0."""
    return ctx.or_reward_one(lambda: ctx.accuracy)


@reward("format")
def _format(ctx: RewardContext) -> float:
    """Registry entry: Open-RS's single-"\\n</think>\\n" format rule."""
    return shaping.format_reward(ctx.completion)


@reward("tag_count")
def _tag_count(ctx: RewardContext) -> float:
    """Registry entry: partial credit for think tags."""
    return shaping.tag_count_reward(ctx.completion)


@reward("cosine")
def _cosine(ctx: RewardContext) -> float:
    """Registry entry: correctness scaled by completion length."""
    return ctx.or_reward_one(
        lambda: shaping.cosine_reward(ctx.cosine_correct, ctx.length, ctx.max_len, clamp=ctx.clamp)
    )


@reward("language")
def _language(ctx: RewardContext) -> float:
    """Registry entry: minus the share of the completion in another script than the prompt's."""
    return -language.language_drift(ctx.prompt, ctx.completion)


BUILTIN_REWARDS = frozenset(REWARD_FUNCTIONS)


class PartialScore(Exception):
    """A reward function raised; `components` holds the values computed before it (built-ins first)."""

    def __init__(self, components: dict[str, float | None], err: Exception) -> None:
        super().__init__(f"{type(err).__name__}: {err}")
        self.components = components  # what a config may name without a `function:`


def _unknown_names(names: Iterable[str], known: Iterable[str] = REWARD_FUNCTIONS) -> list[str]:
    """Return the names not in `known` (default: the registry), in the order given."""
    return [name for name in names if name not in known]


def validate_reward_names(names: Iterable[str]) -> None:
    """Raise ValueError (listing the known names) if any name is not a registered reward.

    Meant for config validation, so a typo fails at startup rather than at the first scored batch.
    """
    unknown = _unknown_names(names, BUILTIN_REWARDS)
    if unknown:
        raise ValueError(
            f"unknown reward function(s) {unknown}; known: {sorted(BUILTIN_REWARDS)} "
            "(or give your own with `function: file.py:name`)"
        )


def score_sample(ctx: RewardContext, weights: dict[str, float]) -> tuple[float, dict[str, float | None]]:
    """Score one completion: return the weighted total and each named component (unweighted, None when the
    function does not apply to this sample; it then adds nothing to the total).

    Accuracy is computed at most once even when "accuracy" and "cosine" are both requested.
    Raises KeyError (listing the known names) for an unknown name, before any reward is computed,
    and lets math_answer.UnparsableGold propagate so the caller can drop and count the sample.
    """
    unknown = _unknown_names(weights)
    if unknown:
        raise KeyError(f"unknown reward function(s) {unknown}; known: {sorted(REWARD_FUNCTIONS)}")
    done: dict[str, float | None] = {}
    # Built-ins first: when a user function raises, the sample is an error (zero reward) but keeps the
    # built-ins' values, so accuracy (the headline, what evaluation reads) is still measured.
    for name in sorted(weights, key=lambda n: n not in BUILTIN_REWARDS):
        try:
            done[name] = REWARD_FUNCTIONS[name](ctx)
        except math_answer.UnparsableGold:
            raise
        except Exception as err:
            raise PartialScore(done, err) from err
    components = {name: done[name] for name in weights}
    total = sum(weights[name] * value for name, value in components.items() if value is not None)
    return float(total), components

"""User reward functions with TRL's signature, loaded from a file or a module by the config.

    def brevity(prompts: list[str], completions: list[str], **kwargs) -> list[float | None]: ...

`rewards.functions: [{name: brevity, function: "my_rewards.py:brevity", weight: 0.5}]` names one: a file path
(relative to the directory the command runs in; stored absolute in the resolved config) or a module path
`pkg.mod:attr` importable where the verifiers run. kwargs carry every column of the prompt's dataset row (as
TRL passes them, except `prompt` and `completion`) and `completion_token_counts`. `prompts` are the
chat-rendered prompts the policy saw. None means "does not apply": excluded from the component's mean.

The verifier's scoring child calls the function once per completion (one-element lists), so the per-sample
timeout and error counting of rewards/sandbox.py apply to it as to the built-ins. `check_custom_rewards` loads
each function and calls it once on the first data row at start-up, so an import error, a wrong signature or
a wrong return length is one clear error before Ray starts.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

from openrs_ray.plugins import PluginError, load_callable
from openrs_ray.rewards.registry import REWARD_FUNCTIONS, RewardContext, SampleReward

__all__ = ["CustomRewardError", "check_custom_rewards", "load_function", "register_custom", "row_columns"]

# Dataset columns never passed as kwargs (the data layer drops them when it keeps a row's columns).
RESERVED = frozenset({"prompt", "completion", "prompts", "completions", "completion_token_counts"})

BatchReward = Callable[..., Sequence[float | None]]


class CustomRewardError(ValueError):
    """A user reward cannot be used: not importable, wrong signature or wrong return value."""


def row_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a dataset row a user reward gets as kwargs."""
    return {k: v for k, v in row.items() if k not in RESERVED}


def load_function(spec: str) -> BatchReward:
    """Import the function `spec` names and check it takes (prompts, completions, **kwargs)."""
    try:
        fn = load_callable(spec, 2, "(prompts, completions, **kwargs) like a TRL reward function")
    except PluginError as err:
        raise CustomRewardError(str(err)) from None
    params = inspect.signature(fn).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        raise CustomRewardError(
            f"{spec!r}: must take (prompts, completions, **kwargs) like a TRL reward function, "
            f"has {getattr(fn, '__name__', 'function')}{inspect.signature(fn)}"
        )
    return fn


def _values(spec: str, out: Any, n: int) -> list[float | None]:
    """The returned list, checked: `n` entries, each a finite-or-not real number or None."""
    if isinstance(out, str | bytes) or not isinstance(out, Sequence):
        raise CustomRewardError(f"{spec!r}: returned a {type(out).__name__}, expected a list of {n} floats or None")
    if len(out) != n:
        raise CustomRewardError(f"{spec!r}: returned {len(out)} values for {n} completions")
    bad = [v for v in out if v is not None and not isinstance(v, Real)]
    if bad:
        raise CustomRewardError(f"{spec!r}: returned {type(bad[0]).__name__} {bad[0]!r}, expected a float or None")
    return [None if v is None else float(v) for v in out]


def _as_sample_reward(spec: str, fn: BatchReward) -> SampleReward:
    """The batch function as a per-sample registry entry (one-element lists, one value back)."""

    def sample_reward(ctx: RewardContext) -> float | None:
        kwargs = {k: [v] for k, v in ctx.columns.items()}
        out = fn([ctx.prompt], [ctx.completion], completion_token_counts=[ctx.token_count], **kwargs)
        value = _values(spec, out, 1)[0]
        if value is not None and math.isnan(value):
            return None  # TRL's reading of NaN as well
        return value

    return sample_reward


def register_custom(functions: Mapping[str, str]) -> None:
    """Put each user function (name -> spec) in the reward registry of this process (once per name and spec)."""
    for name, spec in functions.items():
        entry = REWARD_FUNCTIONS.get(name)
        if getattr(entry, "openrs_spec", None) == spec:
            continue
        fn = _as_sample_reward(spec, load_function(spec))
        fn.openrs_spec = spec  # type: ignore[attr-defined]
        REWARD_FUNCTIONS[name] = fn


def _probe(spec: str, fn: BatchReward, prompt: str, row: Mapping[str, Any]) -> None:
    """Call `fn` on two completions of the first data row: it must return two values."""
    columns = row_columns(row)
    completions = ["", str(row.get("answer", row.get("solution", "")))]
    kwargs = {k: [v, v] for k, v in columns.items()}
    try:
        out = fn([prompt, prompt], completions, completion_token_counts=[0, len(completions[1].split())], **kwargs)
    except Exception as err:  # noqa: BLE001 - user code: one line naming the function
        raise CustomRewardError(
            f"{spec!r}: raised on a probe call with the first data row: {type(err).__name__}: {err}"
        ) from None
    _values(spec, out, 2)


def check_custom_rewards(cfg: Any, probe: bool = True) -> None:
    """Load every `rewards.functions[].function` and (`probe`) call it on the first data row; a ConfigError
    naming the reward on any problem. Runs before Ray starts (cli train, pipeline)."""
    from openrs_ray.config import ConfigError

    custom = [(f.name, f.function) for f in cfg.rewards.functions if f.function]
    if not custom:
        return
    row: dict[str, Any] | None = None
    if probe and cfg.data is not None and cfg.stage == "rl":
        from openrs_ray.data.sources import PROMPT_KEYS, load_rows

        rows = load_rows(cfg.data.model_copy(update={"max_samples": 1}))
        row = rows[0] if rows else None
    for name, spec in custom:
        try:
            fn = load_function(spec)
            if row is not None:
                keys = (cfg.data.prompt_key,) if cfg.data.prompt_key else PROMPT_KEYS
                prompt = next((str(row[k]) for k in keys if k in row), "")
                _probe(spec, fn, prompt, row)
        except CustomRewardError as err:
            raise ConfigError(f"rewards.functions[{name}].function: {err}") from None

"""Pre-flight: every check a config must pass before any actor starts, in one place.

The config validators (openrs_ray.config) look only at the config itself; names that other layers own (reward
functions, benchmarks) and what is outside the process (paths, user extensions, the hub) are checked here, so
the config package never imports rewards/ or eval/. Each failure is one ConfigError line naming the key; the
CLI prints it and exits 2.
"""

from __future__ import annotations

from openrs_ray.config import ConfigError, RunConfig, check_hub, check_paths


def check_names(cfg: RunConfig) -> None:
    """The reward functions and benchmarks the config names exist (no I/O: milliseconds)."""
    from openrs_ray.eval.benchmarks import check_benchmark_names
    from openrs_ray.rewards.registry import BUILTIN_REWARDS, validate_reward_names

    functions = cfg.rewards.functions
    try:
        validate_reward_names([f.name for f in functions if not f.function])
    except ValueError as err:
        raise ConfigError(f"rewards: {err}") from None
    shadow = [f.name for f in functions if f.function and f.name in BUILTIN_REWARDS]
    if shadow:
        raise ConfigError(f"rewards.functions: {shadow} is a built-in reward; give your function another name")
    check_benchmark_names(cfg.eval.benchmarks)


def preflight(cfg: RunConfig, *, skip_under: str | None = None, probe: bool = True) -> None:
    """All start-up checks of a training stage, cheapest first (the hub check is the only network call).

    `skip_under`: models and data under this folder are exempt (a pipeline's earlier stages write them);
    `probe`: also call user rewards on the first data row (off while that data does not exist yet)."""
    from openrs_ray.extensions import check_extensions

    check_names(cfg)
    check_paths(cfg, skip_under=skip_under)  # local model/data paths
    check_extensions(cfg, probe=probe)  # user rewards, loss, advantages: importable, right signature
    check_hub(cfg, skip_under=skip_under)  # hub ids: cached or reachable, else one line in seconds

"""Start-up check of the user extensions a config names: rewards, the loss, the advantage estimator, backends.

Runs in the CLI (train, pipeline) before Ray starts, so a bad import path, a wrong signature or (rewards) a
wrong return value is one ConfigError line naming the key, never an actor's traceback minutes later.
"""

from __future__ import annotations

from openrs_ray.config import ConfigError, RunConfig
from openrs_ray.plugins import is_spec, load_backend


def check_extensions(cfg: RunConfig, probe: bool = True) -> None:
    """Import every user extension of `cfg`; `probe`: also call user rewards on the first data row."""
    from openrs_ray.generators.base import Generator
    from openrs_ray.learners.base import Learner
    from openrs_ray.rewards.custom import check_custom_rewards

    check_custom_rewards(cfg, probe=probe)
    for role, name in (("generator", cfg.generation.backend), ("learner", cfg.learner.backend)):
        if is_spec(name):  # a user's class: importable and implementing the role's ABC (a ConfigError if not)
            load_backend(role, name, Generator if role == "generator" else Learner)
    if cfg.stage != "rl":
        return
    try:
        if is_spec(cfg.learner.loss_type):
            from openrs_ray.learners.loss import resolve_loss

            resolve_loss(cfg.learner.loss_type)
        if is_spec(cfg.buffer.advantage_scale):
            from openrs_ray.buffer.advantages import resolve_advantage

            resolve_advantage(cfg.buffer.advantage_scale)
    except ValueError as err:
        raise ConfigError(str(err)) from None

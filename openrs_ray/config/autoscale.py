"""generation.autoscale: bounds and thresholds of the generator autoscaler (openrs_ray.autoscale)."""

from __future__ import annotations

from pydantic import Field, model_validator

from openrs_ray.config.base import _Section


class AutoscaleConfig(_Section):
    enabled: bool = False
    """Let the driver choose the engine count between steps (generation.num_engines is the starting count)."""
    min_engines: int = Field(default=1, ge=1)
    """Fewest engines the autoscaler keeps."""
    max_engines: int = Field(default=4, ge=1)
    """Most engines the autoscaler asks for (on a cluster with an autoscaler, more may be requested than fit now)."""
    cooldown_steps: int = Field(default=2, ge=0)
    """Steps after a change during which the count holds (new engines start and settle; no oscillation)."""
    window_steps: int = Field(default=2, ge=1)
    """Steps of measurements averaged before a decision (none from the cool-down)."""
    grow_wait_fraction: float = Field(default=0.4, gt=0, le=1)
    """Grow when learners waited for rollouts at least this share of the step ..."""
    grow_busy_fraction: float = Field(default=0.5, ge=0, le=1)
    """... and the engines were busy generating for at least this share of the time the learners waited (the wait
    came from generation, so more engines would help; not from verification or a slow reward)."""
    shrink_busy_fraction: float = Field(default=0.3, ge=0, le=1)
    """Shrink when the engines were busy less than this share of their time while learners waited less than
    grow_wait_fraction (between the two, the count holds: the dead band that prevents flapping)."""

    min_gain: float = Field(default=0.1, ge=0, lt=1)
    """A grow must cut the step time by at least this share (over window_steps after the cool-down), else it
    is undone and the count above becomes a ceiling until the engines next go idle: engines that share
    saturated CPUs or a saturated verifier stay busy without making steps faster."""

    @model_validator(mode="after")
    def _ordered(self) -> AutoscaleConfig:
        if self.min_engines > self.max_engines:
            raise ValueError(f"generation.autoscale: min_engines {self.min_engines} > max_engines {self.max_engines}")
        return self

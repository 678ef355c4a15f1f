"""The run configuration: one pydantic tree, loaded from YAML plus dotted command-line overrides.

Field names follow TRL's GRPOConfig where the concept is the same (`num_generations`,
`max_prompt_length`, `max_completion_length`, `temperature`, `beta`, `epsilon`, `loss_type`).
Every field has a docstring (pydantic turns it into the field description).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from openrs_ray.config.eval import EvalConfig
from openrs_ray.config.paths import check_hub, check_paths
from openrs_ray.config.sections import (
    OPEN_RS_SYSTEM_PROMPT,
    BroadcastConfig,
    BufferConfig,
    CheckpointConfig,
    ClusterConfig,
    ConfigError,
    CostConfig,
    DataConfig,
    GenerationConfig,
    LearnerConfig,
    MetricsConfig,
    ModelConfig,
    RewardsConfig,
    RewardSpec,
    _Section,
)
from openrs_ray.config.stages import KDConfig

__all__ = [
    "OPEN_RS_SYSTEM_PROMPT",
    "BroadcastConfig",
    "BufferConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "ConfigError",
    "CostConfig",
    "DataConfig",
    "EvalConfig",
    "KDConfig",
    "GenerationConfig",
    "LearnerConfig",
    "MetricsConfig",
    "ModelConfig",
    "RewardSpec",
    "RewardsConfig",
    "RunConfig",
    "apply_overrides",
    "check_hub",
    "check_paths",
    "dump_config",
    "load_config",
    "open_rs_batch_warning",
    "parse_config",
    "read_yaml",
]


Stage = Literal["rl", "sft", "kd_seq", "kd_token"]


class RunConfig(_Section):
    stage: Stage = "rl"
    """What `train` runs: rl (GRPO), sft (supervised on reference responses), kd_seq (the teacher writes
    solutions, verifier-correct ones are kept, the student is trained on them) or kd_token (the student
    matches the teacher's token distribution on reference responses)."""
    output_dir: str = "runs/default"
    """Run folder: resolved config.yaml, metrics.jsonl, checkpoints."""
    max_steps: int = Field(default=100, ge=1)
    """Optimizer steps (one batch of prompts each)."""
    prompts_per_step: int = Field(default=4, ge=1)
    """Prompts per step; each yields num_generations completions."""
    seed: int = 0
    """Global seed (learner init order, torch RNG)."""
    model: ModelConfig
    """Policy model."""
    data: DataConfig | None = None
    """Problems (rl, kd_seq) or (prompt, response) pairs (sft, kd_token); required by `train`."""
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    """Generators (vLLM actors) and sampling."""
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    """Reward functions and the verifier pool."""
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    """Rollout buffer and advantages."""
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """DeepSpeed learners and the GRPO loss."""
    broadcast: BroadcastConfig = Field(default_factory=BroadcastConfig)
    """Weight broadcast from learner rank 0 to generators."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Ray cluster and per-role resources."""
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    """Metrics outputs."""
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    """Checkpointing."""
    cost: CostConfig = Field(default_factory=CostConfig)
    """Prices for the run's cost (GPU-hours and dollars in metrics and the summary)."""
    kd: KDConfig = Field(default_factory=KDConfig)
    """Knowledge distillation (stages kd_seq and kd_token)."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Evaluation benchmarks and sampling (`openrs-ray eval`, and every eval.eval_steps while training)."""

    @model_validator(mode="after")
    def _batch_divides(self) -> RunConfig:
        if self.prompts_per_step % self.learner.num_learners:
            raise ValueError(
                f"learner.num_learners: prompts_per_step={self.prompts_per_step} groups must split evenly over "
                f"{self.learner.num_learners} learners (every rank trains on whole groups)"
            )
        return self

    @model_validator(mode="after")
    def _stage_needs(self) -> RunConfig:
        if self.stage.startswith("kd") and self.kd.teacher is None:
            raise ValueError(f"kd.teacher: stage {self.stage} needs a teacher model (kd.teacher.path)")
        return self

    @property
    def rows_per_step(self) -> int:
        """Rows trained on per step, over all learners: completions (rl) or (prompt, response) pairs."""
        return self.prompts_per_step * (self.generation.num_generations if self.stage == "rl" else 1)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[: i + 1])}: is a value, cannot set {dotted}")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides in place; values are parsed as YAML (numbers, bools, lists)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value, e.g. learner.lr=1e-6")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {err}") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        scalar = not isinstance(e["input"], dict | list) and e["type"] != "missing"
        got = f" (got {e['input']!r})" if scalar and e["type"] != "extra_forbidden" else ""
        where = ".".join(str(p) for p in e["loc"])
        # Cross-field checks (model validators) have no location: their message starts with the key.
        lines.append(f"{where}: {msg}{got}" if where else msg)
    return "; ".join(lines)


def parse_config(tree: dict[str, Any]) -> RunConfig:
    """Validate a raw dict into a RunConfig, turning pydantic errors into one ConfigError line."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (a run config or a pipeline), or a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(tree).__name__}")
    return tree


def open_rs_batch_warning(cfg: RunConfig) -> str | None:
    """One line when an Open-RS-mode run (rewards.accuracy_mode=open_rs) with bnpo has micro-batches that are not
    one group: bnpo normalises per micro-batch, and Open-RS's micro-batch was exactly one group of 6."""
    lc, n = cfg.learner, cfg.generation.num_generations
    if cfg.stage != "rl" or cfg.rewards.accuracy_mode != "open_rs" or lc.loss_type != "bnpo":
        return None
    if lc.micro_batch_size == n:
        return None
    return (
        f"warning: learner.micro_batch_size={lc.micro_batch_size} != generation.num_generations={n} with "
        f"loss_type=bnpo: the loss is normalised over other token counts than Open-RS's (one group per micro-batch)"
    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config, apply dotted overrides, and validate (warning, one line, on a broken Open-RS batch)."""
    cfg = parse_config(apply_overrides(read_yaml(path), overrides or []))
    warning = open_rs_batch_warning(cfg)
    if warning is not None:
        logging.getLogger(__name__).warning(warning)
    return cfg


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what `train` stores in the run folder)."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

"""Configuration sections of a run (one pydantic model each); RunConfig in openrs_ray.config assembles them.

Field names follow TRL's GRPOConfig where the concept is the same (`num_generations`,
`max_prompt_length`, `max_completion_length`, `temperature`, `beta`, `epsilon`, `loss_type`).
Every field has a docstring (pydantic turns it into the field description).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from openrs_ray.backends import check_backend
from openrs_ray.config.autoscale import AutoscaleConfig
from openrs_ray.config.base import ConfigError, _Section  # noqa: F401  (re-exported)

OPEN_RS_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user "
    "with the answer, and put your final answer within \\boxed{{}} . The reasoning process and answer "
    "are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>. Note that respond by "
    "English, NOT use other languages."
)


class ModelConfig(_Section):
    path: str
    """Local directory in Hugging Face format, or a hub model id (e.g. deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    """Parameter dtype for generators and learners (float32 for exact logprob comparisons)."""
    trust_remote_code: bool = False
    """Passed to transformers and vLLM when loading the model."""


class DataConfig(_Section):
    path: str
    """Local .json/.jsonl/.parquet file, or a hub dataset name."""
    split: str = "train"
    """Dataset split (hub datasets only)."""
    subset: str | None = None
    """Dataset configuration name (hub datasets only), e.g. "main" for openai/gsm8k."""
    prompt_key: str | None = None
    """Column holding the problem; None picks the first of question/problem/prompt."""
    answer_key: str | None = None
    """Column holding the gold answer; None picks the first of answer/solution. A worked solution (`solution`, as
    Open-RS graded against) is read for its last \\boxed{} answer; GSM8K's for what follows its "####"."""
    response_key: str | None = None
    """SFT / token-level KD: column holding the reference response; None picks the first of
    response/completion/solution/answer (GSM8K's worked solutions end in "#### N", rewritten as \\boxed{N})."""
    messages_key: str | None = None
    """SFT / token-level KD: column holding chat messages ([{role, content}, ...]); the last assistant message
    is the response and everything before it the prompt. Overrides prompt_key/response_key when set."""
    system_prompt: str | None = OPEN_RS_SYSTEM_PROMPT
    """System message put before each problem (Open-RS's by default); None for no system message."""
    shuffle: bool = True
    """Shuffle the problems each epoch (seeded by `seed`)."""
    seed: int = 0
    """Seed of the data order."""
    max_samples: int | None = Field(default=None, ge=1)
    """Use only the first N problems of the file (None: all)."""
    difficulty_key: str = "difficulty"
    """Column holding each problem's difficulty level (MATH: 1-5), used by difficulty_shares."""
    difficulty_shares: dict[str, float] | None = None
    """Target share of prompts per difficulty level, e.g. {"1": 0.5, "5": 0.5} (Open-RS Exp 2 mixed easy
    and hard); levels not named are never drawn. None: every problem once per epoch in seeded order."""
    long_prompts: Literal["drop", "truncate_left"] = "drop"
    """Prompts over generation.max_prompt_length tokens: drop them (counted), or, as TRL did, keep them whole for
    the generator and give the learner only their last max_prompt_length tokens (prompts that leave no room
    in the engine's context, max_prompt_length + max_completion_length tokens, are still dropped)."""


class GenerationConfig(_Section):
    backend: str = "vllm"
    """Inference engine behind each generator actor, by name (openrs_ray.backends), or "file.py:Class"."""

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        return pin_spec(check_backend("generator", value)) or value

    num_engines: int = Field(default=1, ge=1)
    """Number of vLLM generator actors (one engine each)."""
    num_generations: int = Field(default=8, ge=2)
    """Completions sampled per prompt (the GRPO group size)."""
    max_prompt_length: int = Field(default=512, ge=1)
    """Longest prompt in tokens; longer prompts are dropped and counted, or left-truncated for the learner
    (data.long_prompts)."""
    max_completion_length: int = Field(default=256, ge=1)
    """Most tokens sampled per completion."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature (also divides the learner's logits unless learner.scale_logits_by_temperature is off)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling threshold."""
    seed: int = 0
    """Base sampling seed; engine i uses seed + i."""
    kv_cache_gib: int = Field(default=1, ge=1)
    """KV cache size per engine in GiB on CPU (VLLM_CPU_KVCACHE_SPACE)."""
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    """Share of GPU memory vLLM may take (GPU only)."""
    enforce_eager: bool | None = None
    """Skip CUDA graph capture (faster start, slower decode); None: eager on CPU, CUDA graphs on GPU."""
    timeout_s: float = Field(default=900.0, gt=0)
    """Longest wait for one engine's batch of rollouts before the step fails with an error."""
    start_timeout_s: float = Field(default=600.0, gt=0)
    """Longest wait for an engine to start."""
    autoscale: AutoscaleConfig = Field(default_factory=AutoscaleConfig)
    """Engine count chosen by the driver between steps, within bounds (openrs_ray.autoscale); off by default."""


# Built-in names of the extension points whose registries live below the config layer (learners/loss.py,
# buffer/advantages.py; tests/unit/test_extensions.py checks they match). "file.py:fn" / "pkg.mod:fn" name a
# user's own function instead (openrs_ray.plugins).
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "gspo")
ADVANTAGE_SCALES = ("group", "batch", "none", "rloo")


def pin_spec(value: str | None) -> str | None:
    """An extension spec with its file path made absolute: actors may run in another working directory."""
    target, sep, attr = (value or "").rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return value


def _builtin_or_spec(value: str, builtins: tuple[str, ...], key: str) -> str:
    if ":" in value:
        return pin_spec(value) or value
    if value not in builtins:
        raise ValueError(f"{key}: unknown {value!r}; built-in: {list(builtins)}, or your own 'file.py:function'")
    return value


class RewardSpec(_Section):
    name: str
    """Reward function name (see openrs_ray.rewards.registry)."""
    weight: float = 1.0
    """Weight of this component in the summed reward."""
    function: str | None = None
    """Your own reward, TRL's signature `f(prompts, completions, **kwargs) -> list[float | None]`:
    "my_rewards.py:brevity" (file path relative to the working directory; stored absolute) or
    "pkg.mod:attr" (see openrs_ray.rewards.custom). None: `name` is a built-in reward."""

    @field_validator("function")
    @classmethod
    def _absolute_file(cls, value: str | None) -> str | None:
        return pin_spec(value)


class RewardsConfig(_Section):
    functions: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="accuracy"), RewardSpec(name="format")], min_length=1
    )
    """Weighted reward components; each is also logged on its own."""
    num_workers: int = Field(default=2, ge=1)
    """Verifier actors in the pool."""
    sample_timeout_s: float = Field(default=10.0, gt=0)
    """Hard limit on scoring one completion (enforced by killing a child process); late means reward 0."""
    timeout_s: float = Field(default=600.0, gt=0)
    """Backstop on waiting for one scored group (e.g. all verifier actors lost); past it the group is dropped."""
    cosine_max_len: int | None = Field(default=None, ge=1)
    """Length at which the cosine reward reaches its end value (None: max_completion_length)."""
    cosine_length_unit: Literal["tokens", "chars"] = "tokens"
    """Measure completion length in tokens, or in characters as Open-RS did."""
    cosine_clamp: bool = True
    """Clamp the cosine reward's length at cosine_max_len (flat beyond it); Open-RS did not (the cosine keeps
    turning past it, period 2 x cosine_max_len)."""
    accuracy_mode: Literal["lenient", "open_rs"] = "lenient"
    """Answer extraction for the accuracy and cosine rewards: lenient (boxed first, then the last number or
    expression anywhere) or open_rs (Open-RS's code: only anchored LaTeX answers, its normalisation)."""
    unparsable_gold: Literal["drop", "reward_one"] = "drop"
    """A gold answer that cannot be parsed: drop the group (counted), or score accuracy and cosine 1.0 and
    train the group on the other rewards, as Open-RS did."""

    @model_validator(mode="before")
    @classmethod
    def _list_shorthand(cls, data: Any) -> Any:
        # `rewards: [{name: format, weight: 1.0}]` is the Open-RS-style shorthand for `functions:`.
        return {"functions": data} if isinstance(data, list) else data

    @model_validator(mode="after")
    def _distinct_names(self) -> RewardsConfig:
        # Whether each name is a registered reward is checked at pre-flight (openrs_ray.run.preflight.check_names):
        # the config layer does not import rewards/.
        names = [f.name for f in self.functions]
        if len(set(names)) < len(names):
            raise ValueError(f"rewards.functions: a name appears twice in {names}")
        return self


class BufferConfig(_Section):
    max_staleness: int = Field(default=0, ge=0)
    """Most weight versions a trained sample may lag the learner (0: synchronous on-policy)."""
    advantage_scale: str = "group"
    """Advantage estimator: divide by the group's std (group, GRPO), the batch's std (batch), not at all
    (none, Dr.GRPO), leave-one-out baseline (rloo), or your own `fn(rewards, group_size)` as "file.py:fn"
    (see openrs_ray.buffer.advantages)."""

    @field_validator("advantage_scale")
    @classmethod
    def _known_advantage(cls, value: str) -> str:
        return _builtin_or_spec(value, ADVANTAGE_SCALES, "buffer.advantage_scale")

    dynamic_sampling: bool = False
    """Drop groups whose rewards are all equal and refill the batch with new prompts (DAPO)."""
    max_refill_rounds: int = Field(default=4, ge=0)
    """Most extra generation rounds per step when dynamic sampling refills the batch."""
    overlong: Literal["none", "mask", "penalty"] = "none"
    """Truncated completions: train as they are, mask them out of the loss, or penalise them (DAPO)."""
    overlong_buffer_len: int = Field(default=0, ge=0)
    """Soft overlong penalty: tokens before max_completion_length where the penalty starts ramping."""
    overlong_penalty: float = Field(default=1.0, ge=0)
    """Soft overlong penalty at max_completion_length (subtracted from the reward)."""


QWEN2_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraConfig(_Section):
    r: int = Field(default=16, gt=0)
    """Rank of each adapter (PEFT's `r`)."""
    alpha: float = Field(default=32.0, gt=0)
    """Adapter scale numerator: the update is (alpha / r) * B @ A (PEFT's `lora_alpha`)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input while training (PEFT's `lora_dropout`)."""
    target_modules: list[str] = Field(default_factory=lambda: list(QWEN2_LINEAR), min_length=1)
    """Names of the linear layers that get adapters (a module matches when its name ends with one); every
    name must match some module of the model (checked at learner start). Default: all of Qwen2's linears."""
    modules_to_save: list[str] = Field(default_factory=list)
    """Modules trained in full next to the adapters (e.g. lm_head); exported and saved with them."""

    @model_validator(mode="after")
    def _disjoint(self) -> LoraConfig:
        if any(not n.strip() for n in self.target_modules):
            raise ValueError("learner.lora.target_modules: empty module name")
        both = sorted(set(self.target_modules) & set(self.modules_to_save))
        if both:
            raise ValueError(
                f"learner.lora.modules_to_save: {both} also in target_modules; a module gets an adapter "
                "or is trained in full, not both"
            )
        return self


class LearnerConfig(_Section):
    backend: str = "deepspeed"
    """Trainer behind each learner rank, by name (openrs_ray.backends), or "file.py:Class"."""

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        return pin_spec(check_backend("learner", value)) or value

    num_learners: int = Field(default=1, ge=1)
    """Data-parallel DeepSpeed learner actors."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage."""
    lr: float = Field(default=1e-6, gt=0)
    """AdamW learning rate."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping norm."""
    lr_scheduler_type: Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_min_lr"] = (
        "constant"
    )
    """Learning-rate schedule (transformers' names; Open-RS used cosine_with_min_lr)."""
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    """Share of the optimizer steps spent warming the learning rate up from 0."""
    min_lr_rate: float = Field(default=0.1, ge=0, le=1)
    """Final learning rate as a share of lr, for cosine_with_min_lr."""
    importance_sampling_correction: bool = True
    """Weight each token by the truncated ratio of learner to sampling probability (off-policy fix)."""
    importance_sampling_cap: float = Field(default=2.0, gt=0)
    """Cap of that per-token importance weight (truncated importance sampling)."""
    max_consecutive_nonfinite: int = Field(default=3, ge=1)
    """A NaN/inf loss skips its update; this many in a row stop the run (after a checkpoint)."""
    num_iterations: int = Field(default=1, ge=1)
    """Optimizer steps per batch (GRPO's mu); >1 reuses the batch with stored old logprobs and clipping."""
    micro_batch_size: int = Field(default=4, ge=1)
    """Sequences per forward/backward on one learner; the step accumulates over the rest."""
    beta: float = Field(default=0.0, ge=0)
    """KL coefficient (k3 estimator against a frozen reference model, loaded only when > 0)."""
    epsilon: float = Field(default=0.2, gt=0)
    """Lower clipping range of the importance ratio (and upper, unless epsilon_high is set)."""
    epsilon_high: float | None = Field(default=None, gt=0)
    """Upper clipping range (DAPO's clip-higher); None uses epsilon."""
    loss_type: str = "bnpo"
    """Policy loss: grpo, bnpo, dr_grpo, dapo (reductions as TRL names them; bnpo is what Open-RS's TRL version
    used, normalised by the completion tokens of each micro-batch), gspo (sequence-level ratio), or your own
    `fn(inputs: LossInputs) -> (loss, metrics)` as "file.py:fn" (see openrs_ray.learners.loss)."""

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        return _builtin_or_spec(value, LOSS_TYPES, "learner.loss_type")

    scale_logits_by_temperature: bool = True
    """Divide the learner's logits by generation.temperature before the logprobs (TRL since March 2025);
    off: logprobs at temperature 1, as the TRL Open-RS pinned (69ad852e) computed them."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    lora: LoraConfig | None = None
    """Train LoRA adapters (PEFT) instead of every weight; None: full fine-tuning. Generators still get
    full (merged) weights; checkpoints hold the adapter and the merged model."""
    timeout_s: float = Field(default=1800.0, gt=0)
    """Longest wait for one learner call (init or update) before the run fails with an error."""


# The run-plumbing sections live in runtime.py; re-exported here for older imports.
from openrs_ray.config.runtime import (  # noqa: E402, F401
    BroadcastConfig,
    CheckpointConfig,
    ClusterConfig,
    CostConfig,
    MetricsConfig,
)

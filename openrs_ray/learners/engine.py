"""Building blocks of a learner rank: the DeepSpeed config, the LR schedule, model loading."""

from __future__ import annotations

import math
from typing import Any

import torch

from openrs_ray.config import ModelConfig, RunConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def deepspeed_config(cfg: RunConfig, *, train: bool = True) -> dict[str, Any]:
    """The DeepSpeed config of one learner rank (train=False: a frozen reference model's engine)."""
    lc = cfg.learner
    rows_per_rank = cfg.rows_per_step // lc.num_learners
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": lc.micro_batch_size,
        "gradient_accumulation_steps": math.ceil(rows_per_rank / lc.micro_batch_size),
        "zero_optimization": zero_config(cfg),
        "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
        "fp16": {"enabled": cfg.model.dtype == "float16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train:
        ds["gradient_clipping"] = lc.max_grad_norm
        # We hand DeepSpeed a torch AdamW: it avoids compiling FusedAdam/cpu_adam (minutes on CPU).
        ds["zero_allow_untested_optimizer"] = True
    return ds


# Elements per gradient reduce / parameter all-gather bucket under ZeRO-2 on GPU. With overlap_comm DeepSpeed
# keeps about 4.5 buckets of gradients aside: 2e8 bf16 elements is ~1.8 GB, small next to a 48 GB A40.
ZERO_BUCKET_ELEMENTS = 200_000_000


def zero_config(cfg: RunConfig) -> dict[str, Any]:
    """ZeRO section. Stage 2 reduce-scatters gradients inside every micro-step's backward: on GPU it overlaps
    that traffic with the backward (overlap_comm) in bounded buckets. With gradient accumulation across
    nodes (one GPU per pod), ZeRO-1 reduces once per optimizer step instead and sends less (README)."""
    zero: dict[str, Any] = {"stage": cfg.learner.zero_stage}
    if cfg.learner.zero_stage == 2 and cfg.cluster.use_gpu:
        zero.update(
            overlap_comm=True, contiguous_gradients=True,
            reduce_bucket_size=ZERO_BUCKET_ELEMENTS, allgather_bucket_size=ZERO_BUCKET_ELEMENTS,
        )  # fmt: skip
    return zero


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig) -> Any:
    """transformers' schedule by name over max_steps * num_iterations optimizer steps."""
    from transformers import get_scheduler

    lc = cfg.learner
    total = cfg.max_steps * lc.num_iterations
    extra = {"min_lr_rate": lc.min_lr_rate} if lc.lr_scheduler_type == "cosine_with_min_lr" else None
    return get_scheduler(
        lc.lr_scheduler_type,
        optimizer,
        num_warmup_steps=math.ceil(lc.warmup_ratio * total),
        num_training_steps=total,
        scheduler_specific_kwargs=extra,
    )


def load_causal_lm(cfg: RunConfig, model: ModelConfig | None = None) -> torch.nn.Module:
    """The policy (or `model`: a reference or teacher) from a local folder or a hub id, in its dtype."""
    from transformers import AutoModelForCausalLM

    mc = model or cfg.model
    return AutoModelForCausalLM.from_pretrained(mc.path, dtype=DTYPES[mc.dtype], trust_remote_code=mc.trust_remote_code)


def build_reference(cfg: RunConfig, device: torch.device, model: ModelConfig | None = None) -> Any:
    """A frozen model (the initial policy for the KL term, or a KD teacher) on the learner's `device`;
    under ZeRO-3 a sharded inference engine (DeepSpeed places it)."""
    import deepspeed

    from openrs_ray.learners.logprobs import CompletionLogprobs

    ref = CompletionLogprobs(load_causal_lm(cfg, model)).eval().requires_grad_(False)
    if cfg.learner.zero_stage == 3:
        engine, *_ = deepspeed.initialize(model=ref, config=deepspeed_config(cfg, train=False))
        return engine
    return ref.to(device)  # ZeRO 0-2 never moves a module it was not given


def off_device(modules: dict[str, torch.nn.Module | None], device: torch.device) -> list[str]:
    """`role.parameter` names of every parameter not on `device` (a ZeRO-3 shard counts where it lives)."""
    device = torch.device(device)
    wrong = []
    for role, module in modules.items():
        for name, p in module.named_parameters() if module is not None else ():
            at = getattr(p, "ds_tensor", p).device
            if at.type != device.type or (device.index is not None and at.index != device.index):
                wrong.append(f"{role}.{name} on {at}")
    return wrong

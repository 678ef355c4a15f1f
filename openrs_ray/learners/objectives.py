"""What a learner optimises in each stage, in one place: an `Objective` per stage, chosen once by name.

    rl        the GRPO family: the policy loss `learner.loss_type` names (learners/loss.py registry)
    sft       token NLL of reference responses
    kd_seq    token NLL of the teacher's kept solutions (sequence-level KD: SFT on teacher data)
    kd_token  KL to the teacher's top-k distribution per token (token-level KD)

In the spirit of RLlib's `Learner.compute_loss_for_module`: every objective has one verb,
`compute_loss(policy, mb, ctx) -> (loss, metrics)`, and declares what it needs beside the policy (a frozen
reference, a teacher on the learner, the teacher's top-k per token, a logit temperature). The tensor maths
of every objective is a function of one `LossInputs` returning (loss, metrics): the policy losses in
learners/loss.py, `sft_nll` and `token_kd` here. The learner (deepspeed_actor.py) never branches on the stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from openrs_ray.config import RunConfig
from openrs_ray.learners.distill import masked_token_sum, nll, token_kl
from openrs_ray.learners.loss import LossFn, LossInputs, resolve_loss
from openrs_ray.plugins import resolve

__all__ = [
    "OBJECTIVES", "MicroBatch", "Objective", "UpdateScale", "objective_for", "register_objective", "sft_nll",
    "token_kd",
]  # fmt: skip


@dataclass
class MicroBatch:
    """Tensors of one micro-batch, built once per update and reused by every iteration."""

    input_ids: torch.Tensor  # [b, P+C]
    attention_mask: torch.Tensor  # [b, P+C]
    position_ids: torch.Tensor  # [b, P+C]
    mask: torch.Tensor  # [b, C] completion tokens times the row's loss weight
    advantages: torch.Tensor  # [b]
    sampling: torch.Tensor | None = None  # [b, C] the engine's logprobs, for importance sampling
    old_logprobs: torch.Tensor | None = None  # [b, C], when num_iterations > 1
    ref_logprobs: torch.Tensor | None = None  # [b, C], when beta > 0
    topk_ids: torch.Tensor | None = None  # [b, C, k] the teacher's top-k tokens (token-level KD)
    teacher: torch.Tensor | None = None  # [b, C, k(+1)] the teacher's partition logprobs (token-level KD)


@dataclass(frozen=True)
class UpdateScale:
    """Numbers of the whole update that a micro-batch's loss is normalised by."""

    tokens_per_rank: float  # completion tokens of the global batch / number of learner ranks
    grad_accumulation_steps: int  # micro-batches per optimizer step (DeepSpeed divides each loss by it)


def _global_token_mean(total: torch.Tensor, inp: LossInputs) -> torch.Tensor:
    """A micro-batch's token sum as its share of the step's global token mean. DeepSpeed divides each micro-batch
    loss by gradient_accumulation_steps and averages over ranks; scaling by both (`num_items_in_batch` is the
    global token count per rank) makes the gradient exactly that of the global token mean."""
    if not inp.num_items_in_batch:
        raise ValueError("a supervised objective needs num_items_in_batch (completion tokens of the global batch)")
    return total * (inp.grad_accumulation_steps / inp.num_items_in_batch)


def sft_nll(inp: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """SFT / sequence-level KD: the token NLL of the completions (`logprobs` [B, T]) as a global token mean."""
    total = nll(inp.logprobs, inp.mask)
    return _global_token_mean(total, inp), {"nll_sum": total.item()}


def token_kd(inp: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level KD: the `kd_divergence` (forward_kl or reverse_kl) between the student's partition logprobs
    (`logprobs`, [B, T, K]) and the teacher's (`teacher_logprobs`), as a global token mean."""
    if inp.teacher_logprobs is None:
        raise ValueError("token-level KD needs teacher_logprobs")
    total = masked_token_sum(token_kl(inp.logprobs, inp.teacher_logprobs, inp.kd_divergence), inp.mask)
    return _global_token_mean(total, inp), {"kd_loss_sum": total.item()}


class Objective:
    """One stage's objective on a learner rank. Subclasses set what they need and implement compute_loss."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def uses_reference(self) -> bool:
        """True when the frozen initial policy must be loaded (reference logprobs per micro-batch)."""
        return False

    def teacher_on_learner(self) -> bool:
        """True when each rank loads the KD teacher itself (else the batch carries its top-k, or none is used)."""
        return False

    def uses_teacher_topk(self) -> bool:
        """True when each micro-batch needs the teacher's top-k ids and partition logprobs."""
        return False

    def temperature(self) -> float:
        """The temperature the policy's logits are divided by before its logprobs."""
        return 1.0

    def logprobs(self, model: Any, mb: MicroBatch) -> torch.Tensor:
        """[b, C] completion logprobs under `model` (the policy engine or the reference)."""
        return model(mb.input_ids, mb.attention_mask, mb.position_ids, mb.mask.size(1), self.temperature())

    def compute_loss(self, policy: Any, mb: MicroBatch, scale: UpdateScale) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss to back-propagate, metrics) of one micro-batch; metrics named `x_sum` become token means."""
        raise NotImplementedError


OBJECTIVES: dict[str, Callable[[RunConfig], Objective]] = {}


def register_objective(*stages: str) -> Callable[[type[Objective]], type[Objective]]:
    """Register an Objective class as the objective of `stages` (values of `cfg.stage`)."""

    def register(cls: type[Objective]) -> type[Objective]:
        for stage in stages:
            OBJECTIVES[stage] = cls
        return cls

    return register


def objective_for(cfg: RunConfig) -> Objective:
    """The objective of `cfg.stage`, built for this config (a ValueError for an unknown stage)."""
    return resolve(OBJECTIVES, cfg.stage, "stage", "stage", 1, "(cfg: RunConfig) and return an Objective")(cfg)


@register_objective("rl")
class PolicyGradient(Objective):
    """The GRPO family: the clipped surrogate (plus KL penalty) that `learner.loss_type` names, with truncated
    importance sampling against the engine that sampled, at the sampling temperature."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.loss: LossFn = resolve_loss(cfg.learner.loss_type)

    def uses_reference(self) -> bool:
        return self.cfg.learner.beta > 0  # only then: a second model costs memory

    def temperature(self) -> float:
        # at the sampling temperature, or 1 as the TRL Open-RS pinned did
        return self.cfg.generation.temperature if self.cfg.learner.scale_logits_by_temperature else 1.0

    def compute_loss(self, policy: Any, mb: MicroBatch, scale: UpdateScale) -> tuple[torch.Tensor, dict[str, float]]:
        lc = self.cfg.learner
        logprobs = self.logprobs(policy, mb)  # [b, C]
        # With one iteration old = current, detached (ratio 1), exactly as TRL does.
        old = mb.old_logprobs if mb.old_logprobs is not None else logprobs.detach()
        is_w = None
        if mb.sampling is not None:  # off-policy fix: the engine sampled from its own version
            is_w = torch.exp(old - mb.sampling).clamp(max=lc.importance_sampling_cap) * (mb.mask > 0)
        inputs = LossInputs(
            logprobs, old, mb.advantages, mb.mask, epsilon=lc.epsilon, epsilon_high=lc.epsilon_high, beta=lc.beta,
            ref_logprobs=mb.ref_logprobs, max_completion_length=self.cfg.generation.max_completion_length,
            # DeepSpeed averages gradients over ranks; dividing by tokens/world_size gives the
            # global token mean, exactly as TRL normalises dapo under DDP.
            num_items_in_batch=scale.tokens_per_rank, is_weights=is_w,
        )  # fmt: skip
        loss, metrics = self.loss(inputs)
        return loss, {"loss": loss.item(), **metrics}


@register_objective("sft", "kd_seq")
class TokenNLL(Objective):
    """SFT on reference responses; kd_seq is the same objective on the teacher's kept solutions."""

    def compute_loss(self, policy: Any, mb: MicroBatch, scale: UpdateScale) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs = self.logprobs(policy, mb)
        return sft_nll(_supervised_inputs(logprobs, mb, scale))


@register_objective("kd_token")
class TokenKD(Objective):
    """Token-level KD: the student's partition logprobs on the teacher's top-k tokens, against the teacher's."""

    def teacher_on_learner(self) -> bool:
        return self.cfg.kd.teacher_source == "learner"

    def uses_teacher_topk(self) -> bool:
        return True

    def compute_loss(self, policy: Any, mb: MicroBatch, scale: UpdateScale) -> tuple[torch.Tensor, dict[str, float]]:
        student = policy(mb.input_ids, mb.attention_mask, mb.position_ids, mb.mask.size(1), topk_ids=mb.topk_ids)
        inputs = _supervised_inputs(student, mb, scale)
        inputs.teacher_logprobs, inputs.kd_divergence = mb.teacher, self.cfg.kd.loss
        return token_kd(inputs)


def _supervised_inputs(logprobs: torch.Tensor, mb: MicroBatch, scale: UpdateScale) -> LossInputs:
    """LossInputs of a supervised objective: no ratio (old = current, detached), the step's token count."""
    return LossInputs(
        logprobs, logprobs.detach(), mb.advantages, mb.mask,
        num_items_in_batch=scale.tokens_per_rank, grad_accumulation_steps=scale.grad_accumulation_steps,
    )  # fmt: skip

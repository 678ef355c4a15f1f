"""Configuration of the non-RL stages (knowledge distillation) and of evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openrs_ray.config.sections import ModelConfig, _Section


class KDConfig(_Section):
    teacher: ModelConfig | None = None
    """Teacher model (kd_seq, kd_token). It must share the student's tokenizer for kd_token."""
    loss: Literal["forward_kl", "reverse_kl"] = "forward_kl"
    """kd_token: KL(teacher || student) (mass-covering, the usual KD) or KL(student || teacher) (mode-seeking)."""
    top_k: int = Field(default=20, ge=1)
    """kd_token: teacher tokens kept per position; the rest of the vocabulary is one 'other' bucket, so the
    divergence is exact on a (top_k + 1)-way partition (top_k >= vocabulary size: the full distribution)."""
    teacher_source: Literal["vllm", "learner"] = "vllm"
    """kd_token: teacher top-k logprobs from generator actors serving the teacher (vLLM prompt logprobs), or a
    frozen teacher loaded on every learner rank next to the student (full logits, no transfer)."""
    num_solutions: int = Field(default=4, ge=1)
    """kd_seq: solutions the teacher samples per problem (at generation.temperature / top_p)."""
    keep_per_problem: int = Field(default=1, ge=1)
    """kd_seq: verifier-correct solutions kept per problem (distinct texts, in sampling order)."""
    max_problems: int | None = Field(default=None, ge=1)
    """kd_seq: problems the teacher solves (None: the whole dataset once)."""

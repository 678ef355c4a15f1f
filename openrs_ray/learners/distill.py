"""Supervised objectives of a learner: token NLL (SFT, sequence-level KD) and token-level KD divergences.

Token-level KD compares the student with the teacher on a (k + 1)-way partition of the vocabulary at every
completion position: the teacher's top-k tokens, one by one, plus one bucket for all other tokens. A vLLM
teacher only returns its top-k logprobs, and this partition keeps the divergence exact for what is known:
it is zero when student = teacher, it still penalises student mass outside the teacher's top-k (through the
'other' bucket), and with k >= vocabulary size it is the full-distribution KL.
"""

from __future__ import annotations

import torch

# Log-mass floor of the 'other' bucket: its mass is 1 - sum(top-k), which rounding can make 0 or negative.
_LOG_FLOOR = -60.0


def partition_logprobs(topk_logprobs: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
    """[..., k] logprobs of k distinct tokens → [..., k + 1] logprobs of (those tokens, every other token).

    When the k tokens are the whole vocabulary (k == vocab_size) no 'other' bucket is added.
    """
    if vocab_size is not None and topk_logprobs.size(-1) >= vocab_size:
        return topk_logprobs
    covered = torch.logsumexp(topk_logprobs, dim=-1, keepdim=True).clamp(max=0.0)  # log of the top-k mass
    # log(1 - exp(covered)), computed without cancellation; a mass of ~0 is floored, not -inf.
    other = torch.log(-torch.expm1(covered)).clamp(min=_LOG_FLOOR)
    return torch.cat([topk_logprobs.clamp(min=_LOG_FLOOR), other], dim=-1)


def token_kl(student: torch.Tensor, teacher: torch.Tensor, direction: str) -> torch.Tensor:
    """Per-position KL over the last dim of two [..., K] log-distributions on the same partition.

    forward_kl = KL(teacher || student) = sum p_t (log p_t - log p_s)   (the usual KD objective)
    reverse_kl = KL(student || teacher) = sum p_s (log p_s - log p_t)
    """
    if direction == "forward_kl":
        return (teacher.exp() * (teacher - student)).sum(-1)
    if direction == "reverse_kl":
        return (student.exp() * (student - teacher)).sum(-1)
    raise ValueError(f"kd.loss: unknown direction {direction!r} (forward_kl or reverse_kl)")


def masked_token_sum(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over real completion tokens (mask carries each row's loss weight; padding is 0)."""
    return (per_token * mask).sum()


def nll(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of the completion tokens: the SFT objective before normalising."""
    return masked_token_sum(-logprobs, mask)

"""Per-token logprobs of completions, computed in chunks so [B, T, V] fp32 logits never all live at once.

Qwen's vocabulary is 151,936: eight 4,096-token sequences would need 20 GB of fp32 logits. Each chunk's
logits are recomputed in backward (activation checkpointing), so peak memory is one chunk's worth, with
the same values and gradients as the naive log_softmax + gather.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from openrs_ray.learners.distill import partition_logprobs


def _chunk_logprobs(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    logits = head(hidden).float() / temperature  # [B, C, V]
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, C]
    return picked - torch.logsumexp(logits, dim=-1)  # [B, C]


def chunked_token_logprobs(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Logprob of `targets` under `head(hidden)`.

    hidden: [B, T, H] states that predict targets: [B, T]. Returns [B, T] float32.
    """
    if hidden.shape[:2] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree on [B, T]")
    pieces = []
    for start in range(0, targets.size(1), chunk_size):
        h = hidden[:, start : start + chunk_size]  # [B, C, H]
        t = targets[:, start : start + chunk_size]  # [B, C]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_logprobs, h, head, t, temperature, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, head, t, temperature))
    return torch.cat(pieces, dim=1)  # [B, T]


def pack_rows(
    prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad prompts and right-pad completions so every completion starts at the same column (as TRL).

    Returns input_ids [B, P+C], attention_mask [B, P+C], position_ids [B, P+C] (counting real tokens
    only, so left padding does not shift positions: vLLM sees no padding at all), completion_mask [B, C].
    """
    p_len = max(len(p) for p in prompt_ids)
    c_len = max(max((len(c) for c in completion_ids), default=0), 1)
    rows, attn, cmask = [], [], []
    for p, c in zip(prompt_ids, completion_ids, strict=True):
        lpad, rpad = p_len - len(p), c_len - len(c)
        rows.append([pad_id] * lpad + list(p) + list(c) + [pad_id] * rpad)
        attn.append([0] * lpad + [1] * (len(p) + len(c)) + [0] * rpad)
        cmask.append([1] * len(c) + [0] * rpad)
    input_ids = torch.tensor(rows, dtype=torch.long)
    attention_mask = torch.tensor(attn, dtype=torch.long)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids, torch.tensor(cmask, dtype=torch.float32)


def _completion_states(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, n: int
) -> torch.Tensor:
    """[B, n, H] decoder states that predict the last n columns of input_ids."""
    base = getattr(model, model.base_model_prefix)  # the decoder without its LM head
    out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state[:, -n - 1 : -1]


def completion_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    completion_len: int,
    *,
    temperature: float = 1.0,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Logprobs of the last `completion_len` columns of input_ids under a causal LM: [B, completion_len]."""
    if completion_len == 0:
        return torch.zeros(input_ids.size(0), 0, device=input_ids.device)
    hidden = _completion_states(model, input_ids, attention_mask, position_ids, completion_len)
    targets = input_ids[:, -completion_len:]  # [B, C]
    return chunked_token_logprobs(
        hidden, model.get_output_embeddings(), targets, temperature=temperature, chunk_size=chunk_size
    )


def _chunk_partition(hidden: torch.Tensor, head: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logprobs = torch.log_softmax(head(hidden).float(), dim=-1)  # [B, c, V]
    return partition_logprobs(logprobs.gather(-1, ids), logprobs.size(-1))  # [B, c, k(+1)]


def _chunk_topk(hidden: torch.Tensor, head: torch.nn.Module, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    logprobs = torch.log_softmax(head(hidden).float(), dim=-1)
    top, ids = logprobs.topk(min(k, logprobs.size(-1)), dim=-1)
    return ids, partition_logprobs(top, logprobs.size(-1))


def completion_partition(
    model: torch.nn.Module, input_ids, attention_mask, position_ids, topk_ids: torch.Tensor, *, chunk_size: int = 256
) -> torch.Tensor:
    """Student side of token-level KD: [B, C, k(+1)] logprobs of the teacher's top-k tokens (+ 'other').

    topk_ids: [B, C, k] token ids per completion position. Chunked and checkpointed like the logprobs.
    """
    hidden = _completion_states(model, input_ids, attention_mask, position_ids, topk_ids.size(1))
    head, pieces = model.get_output_embeddings(), []
    for start in range(0, topk_ids.size(1), chunk_size):
        h, ids = hidden[:, start : start + chunk_size], topk_ids[:, start : start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_partition, h, head, ids, use_reentrant=False))
        else:
            pieces.append(_chunk_partition(h, head, ids))
    return torch.cat(pieces, dim=1)


@torch.no_grad()
def completion_topk(
    model: torch.nn.Module, input_ids, attention_mask, position_ids, completion_len: int, k: int, chunk_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher side of token-level KD on a learner: ([B, C, k] top-k ids, [B, C, k(+1)] partition logprobs)."""
    hidden = _completion_states(model, input_ids, attention_mask, position_ids, completion_len)
    head = model.get_output_embeddings()
    parts = [_chunk_topk(hidden[:, s : s + chunk_size], head, k) for s in range(0, completion_len, chunk_size)]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


class CompletionLogprobs(torch.nn.Module):
    """A causal LM whose forward returns completion logprobs: what DeepSpeed wraps on a learner.

    ZeRO-3 fetches, releases and reduces parameters through hooks that fire around the top-level
    module's forward; calling the decoder and the LM head directly from outside breaks gradient
    accumulation across micro-batches (measured: grads wrong by ~5% at 2 micro-batches). Making the
    chunked computation the top-level forward keeps every call inside DeepSpeed's bookkeeping.
    The KD modes live in the same forward for the same reason.
    """

    def __init__(self, causal_lm: torch.nn.Module) -> None:
        super().__init__()
        self.causal_lm = causal_lm

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        completion_len: int,
        temperature: float = 1.0,
        topk_ids: torch.Tensor | None = None,
        topk: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """[B, C] completion logprobs; with `topk_ids` the KD partition logprobs [B, C, k(+1)]; with `topk`
        the model's own top-k (ids, partition logprobs) (a teacher)."""
        args = (self.causal_lm, input_ids, attention_mask, position_ids)
        if topk_ids is not None:
            return completion_partition(*args, topk_ids)
        if topk is not None:
            return completion_topk(*args, completion_len, topk)
        return completion_logprobs(*args, completion_len, temperature=temperature)

"""Learner checks that need a CUDA GPU: chunked logprobs at Qwen's vocabulary in bf16, and a GPU LearnerGroup.

Run on a GPU machine with `pytest tests/gpu -m gpu`; CI deselects them (-m "not gpu"). Without CUDA they fail
(they never skip: a GPU run that silently skipped would look green).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from openrs_ray.learners.logprobs import chunked_token_logprobs
from tests.conftest import REPO

pytestmark = pytest.mark.gpu

# Qwen2.5's vocabulary and Qwen2.5-0.5B's width; 2 x 2048 tokens make the fp32 [B, T, V] logits 2.3 GiB,
# against 8 chunks of 2 x 256 tokens (0.29 GiB of fp32 logits each).
B, T, H, V, CHUNK = 2, 2048, 896, 151_936, 256
# bf16 logits come out of differently shaped GEMMs (all rows at once vs one chunk), which may round a logit
# to a neighbouring bf16 value: one bf16 ulp for |logit| in [2, 4) is 2**-6. Logits here have std ~0.6.
VALUE_ATOL = 2**-6
# Gradients are bf16 tensors: d hidden from a GEMM over V (split differently per shape), d head summed over
# 8 chunks in bf16 instead of one fp32-accumulated GEMM. Compared as ||a - b|| / ||b||.
GRAD_RTOL = 1e-2


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.fail("this test needs a CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine")


def _naive(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()  # [B, T, V]: bf16 GEMM, fp32 softmax, as the chunked path does per chunk
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T]


def _chunked(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor) -> torch.Tensor:
    return chunked_token_logprobs(hidden, head, targets, chunk_size=CHUNK)


def _fwd_bwd(fn, hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, grad_out: torch.Tensor):
    """Values, d hidden, d head, and the peak CUDA memory this forward+backward added, in bytes."""
    h = hidden.detach().clone().requires_grad_(True)
    head.weight.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn(h, head, targets)
    (out * grad_out).sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return out.detach(), h.grad, head.weight.grad.detach().clone(), peak


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_chunked_logprobs_match_naive_in_bf16_with_less_memory() -> None:
    _require_cuda()
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    head = torch.nn.Linear(H, V, bias=False, device=dev, dtype=torch.bfloat16)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=gen)  # Qwen2's initializer_range
    hidden = torch.randn(B, T, H, device=dev, generator=gen).to(torch.bfloat16)
    targets = torch.randint(0, V, (B, T), device=dev, generator=gen)
    grad_out = torch.randn(B, T, device=dev, generator=gen)  # a generic upstream gradient
    with torch.no_grad():
        head(hidden[:, :1])  # create the cuBLAS handle and workspace before measuring

    naive, n_dh, n_dw, naive_peak = _fwd_bwd(_naive, hidden, head, targets, grad_out)
    chunked, c_dh, c_dw, chunked_peak = _fwd_bwd(_chunked, hidden, head, targets, grad_out)

    assert chunked.dtype == naive.dtype == torch.float32 and chunked.shape == (B, T)
    assert torch.isfinite(chunked).all() and (chunked <= 0).all()
    assert c_dh.dtype == torch.bfloat16 and c_dw.dtype == torch.bfloat16
    value_err = (chunked - naive).abs().max().item()
    dh_err, dw_err = _rel(c_dh, n_dh), _rel(c_dw, n_dw)
    print(f"max |value diff| {value_err:.2e}; rel grad err hidden {dh_err:.2e} head {dw_err:.2e}")
    assert value_err <= VALUE_ATOL
    assert (chunked - naive).abs().mean().item() < 1e-3  # rounding differences are rare, not systematic
    assert dh_err < GRAD_RTOL and dw_err < GRAD_RTOL
    assert n_dw.float().abs().max() > 0 and n_dh.float().abs().max() > 0

    logits_bytes = B * T * V * 4
    print(f"peak CUDA memory: naive {naive_peak / 2**30:.2f} GiB, chunked {chunked_peak / 2**30:.2f} GiB")
    assert naive_peak >= 2 * logits_bytes  # the naive path really holds several [B, T, V] fp32 tensors
    assert chunked_peak < 0.5 * naive_peak


@pytest.fixture(scope="module")
def ray_gpu():
    import ray

    if ray.is_initialized():  # e.g. started by another module of the same session
        yield
        return
    ray.init(num_cpus=4, object_store_memory=1 << 30, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _batch(rows: int, group: int, vocab: int):
    from openrs_ray.types import TrainBatch

    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (16,), generator=gen).tolist() for _ in range(rows // group)]
    completions = [torch.randint(3, vocab, (24,), generator=gen).tolist() for _ in range(rows)]
    return TrainBatch(
        prompt_ids=[prompts[i // group] for i in range(rows)], completion_ids=completions,
        advantages=[1.0 if i % 2 == 0 else -1.0 for i in range(rows)],
        sampling_logprobs=[[-1.0] * 24] * rows, weight_versions=[0] * rows, loss_weights=[1.0] * rows,
    )  # fmt: skip


def test_gpu_learner_group_bf16_takes_two_updates(ray_gpu: None, tiny_model: Path) -> None:
    _require_cuda()
    import ray

    from openrs_ray.config import load_config
    from openrs_ray.learners.group import LearnerGroup

    assert ray.cluster_resources().get("GPU", 0) >= 1, "Ray sees no GPU"
    cfg = load_config(REPO / "configs/smoke.yaml", [
        f"model.path={tiny_model}", "cluster.use_gpu=true", "model.dtype=bfloat16", "learner.num_learners=1",
        "prompts_per_step=2", "generation.num_generations=4", "learner.micro_batch_size=4", "max_steps=2",
    ])  # fmt: skip
    batch = _batch(cfg.rows_per_step, cfg.generation.num_generations, vocab=500)
    group = LearnerGroup(cfg)
    try:
        group.wait_ready()
        before = group.logprobs(batch.prompt_ids[0], batch.completion_ids[0])
        metrics = [group.update(batch) for _ in range(2)]
        after = group.logprobs(batch.prompt_ids[0], batch.completion_ids[0])
    finally:
        group.shutdown()
    for m in metrics:
        assert math.isfinite(m["loss"]), m
        assert math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0, m
        assert m["learner_tokens"] == cfg.rows_per_step * 24
    assert len(before) == len(after) == 24 and all(math.isfinite(x) for x in before + after)
    assert before != after  # the weights moved

"""Chunked logprobs equal the naive ones (values and gradients); packing matches per-row, unpadded runs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from openrs_ray.learners.logprobs import chunked_token_logprobs, completion_logprobs, pack_rows

B, T, H, V = 2, 7, 8, 50


def _naive(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, temperature: float = 1.0):
    logits = head(hidden).float() / temperature  # [B, T, V]
    return logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T]


def _setup(seed: int = 0) -> tuple[torch.Tensor, torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    head = torch.nn.Linear(H, V, bias=False)
    hidden = torch.randn(B, T, H)
    targets = torch.randint(0, V, (B, T))
    return hidden, head, targets


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_chunked_values_and_gradients_match_naive(chunk_size: int) -> None:
    hidden, head, targets = _setup()
    grad_out = torch.randn(B, T)  # a generic upstream gradient, not just ones
    with torch.enable_grad():
        h1 = hidden.clone().requires_grad_(True)
        naive = _naive(h1, head, targets)
        (naive * grad_out).sum().backward()
        naive_dh, naive_dw = h1.grad.clone(), head.weight.grad.clone()
        head.weight.grad = None

        h2 = hidden.clone().requires_grad_(True)
        out = chunked_token_logprobs(h2, head, targets, chunk_size=chunk_size)
        assert out.shape == (B, T) and out.dtype == torch.float32
        assert out.requires_grad
        (out * grad_out).sum().backward()
    assert_close(out.detach(), naive.detach(), rtol=0, atol=1e-6)
    assert_close(h2.grad, naive_dh, rtol=0, atol=1e-6)
    assert_close(head.weight.grad, naive_dw, rtol=0, atol=1e-6)
    assert naive_dw.abs().max() > 1e-3  # the head gradient is not trivially zero


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_chunked_without_grad_matches_naive(chunk_size: int) -> None:
    hidden, head, targets = _setup(1)
    with torch.no_grad():
        out = chunked_token_logprobs(hidden, head, targets, chunk_size=chunk_size)
        expected = _naive(hidden, head, targets)
    assert not out.requires_grad
    assert_close(out, expected, rtol=0, atol=1e-6)
    assert (out <= 0).all()


def test_temperature_divides_logits_hand_values() -> None:
    # H=1, V=2, weight [[1], [0]], hidden 2 -> logits [2, 0].
    # T=1: logprob(token 0) = 2 - log(e^2 + 1) = -0.1269280; logprob(token 1) = -log(e^2 + 1) = -2.1269280.
    # T=2: logits [1, 0] -> 1 - log(e + 1) = -0.3132617; -log(e + 1) = -1.3132617.
    head = torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0], [0.0]]))
    hidden = torch.full((1, 2, 1), 2.0)
    targets = torch.tensor([[0, 1]])
    with torch.no_grad():
        t1 = chunked_token_logprobs(hidden, head, targets)
        t2 = chunked_token_logprobs(hidden, head, targets, temperature=2.0, chunk_size=1)
    l1, l2 = math.log(math.e**2 + 1), math.log(math.e + 1)
    assert_close(t1, torch.tensor([[2 - l1, -l1]]), rtol=0, atol=1e-6)
    assert_close(t2, torch.tensor([[1 - l2, -l2]]), rtol=0, atol=1e-6)
    assert_close(t2, torch.tensor([[-0.3132617, -1.3132617]]), rtol=0, atol=1e-6)


def test_temperature_matches_naive_with_grad() -> None:
    hidden, head, targets = _setup(2)
    h = hidden.clone().requires_grad_(True)
    out = chunked_token_logprobs(h, head, targets, temperature=0.7, chunk_size=3)
    out.sum().backward()
    h0 = hidden.clone().requires_grad_(True)
    _naive(h0, head, targets, temperature=0.7).sum().backward()
    assert_close(out.detach(), _naive(hidden, head, targets, temperature=0.7).detach(), rtol=0, atol=1e-6)
    assert_close(h.grad, h0.grad, rtol=0, atol=1e-6)
    assert not torch.allclose(out, _naive(hidden, head, targets), atol=1e-3)  # temperature does change them


@pytest.mark.parametrize("target_shape", [(B, T - 1), (B + 1, T), (B * T,)])
def test_mismatched_shapes_raise(target_shape: tuple[int, ...]) -> None:
    hidden, head, _ = _setup()
    with pytest.raises(ValueError, match="disagree"):
        chunked_token_logprobs(hidden, head, torch.zeros(target_shape, dtype=torch.long))


PROMPTS = [[5, 6, 7], [8]]
COMPLETIONS = [[1, 2], [3, 4, 5]]


def test_pack_rows_exact() -> None:
    input_ids, attn, pos, cmask = pack_rows(PROMPTS, COMPLETIONS, pad_id=0)
    # Prompts left-padded to 3, completions right-padded to 3.
    assert torch.equal(input_ids, torch.tensor([[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 5]]))
    assert torch.equal(attn, torch.tensor([[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]))
    # Positions count real tokens only: row 1's prompt token 8 is at position 0, like row 0's 5.
    # Padding gets clamp(cumsum - 1, 0): row 0's trailing pad repeats 4, row 1's leading pads are 0.
    assert torch.equal(pos, torch.tensor([[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]))
    assert torch.equal(cmask, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    assert input_ids.dtype == attn.dtype == pos.dtype == torch.long
    assert cmask.dtype == torch.float32


def test_pack_rows_other_pad_id_and_real_positions() -> None:
    input_ids, attn, pos, _ = pack_rows(PROMPTS, COMPLETIONS, pad_id=9)
    assert torch.equal(input_ids, torch.tensor([[5, 6, 7, 1, 2, 9], [9, 9, 8, 3, 4, 5]]))
    # Real tokens of each row are numbered 0..n-1 whatever the padding.
    assert pos[0][attn[0].bool()].tolist() == [0, 1, 2, 3, 4]
    assert pos[1][attn[1].bool()].tolist() == [0, 1, 2, 3]


def test_pack_rows_empty_completion_keeps_one_column() -> None:
    input_ids, attn, pos, cmask = pack_rows([[5, 6]], [[]], pad_id=0)
    assert torch.equal(input_ids, torch.tensor([[5, 6, 0]]))
    assert torch.equal(attn, torch.tensor([[1, 1, 0]]))
    assert torch.equal(pos, torch.tensor([[0, 1, 1]]))
    assert torch.equal(cmask, torch.tensor([[0.0]]))


@pytest.fixture(scope="module", params=[1, 2], ids=["1layer", "2layers"])
def qwen2(request: pytest.FixtureRequest) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2Config(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=request.param,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        initializer_range=0.2,  # larger than the default 0.02 so logprobs differ clearly between contexts
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config).eval()


def _alone(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """Completion logprobs of one unpadded row: the logits at column i predict token i + 1."""
    ids = torch.tensor([prompt + completion])
    logp = model(input_ids=ids).logits[0].float().log_softmax(-1)  # [P+C, V]
    cols = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return logp[cols, torch.tensor(completion)]  # [C]


@pytest.mark.parametrize("chunk_size", [2, 256])
def test_completion_logprobs_match_unpadded_rows(qwen2: torch.nn.Module, chunk_size: int) -> None:
    input_ids, attn, pos, cmask = pack_rows(PROMPTS, COMPLETIONS, pad_id=0)
    with torch.no_grad():
        out = completion_logprobs(qwen2, input_ids, attn, pos, cmask.size(1), chunk_size=chunk_size)
        assert out.shape == (2, 3)
        for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
            assert_close(out[i, : len(c)], _alone(qwen2, p, c), rtol=0, atol=1e-5)
        assert torch.isfinite(out).all()
        # The check is sensitive: ignoring the padding (attend to everything) changes the left-padded row.
        # (Position ids shifted by a constant would NOT show here: RoPE scores depend only on relative
        # positions. test_completion_logprobs_passes_masks_and_positions pins what reaches the decoder.)
        unmasked = completion_logprobs(qwen2, input_ids, torch.ones_like(attn), pos, cmask.size(1))
        assert (unmasked[1] - out[1]).abs().max() > 1e-3


def test_completion_logprobs_passes_masks_and_positions(qwen2: torch.nn.Module) -> None:
    input_ids, attn, pos, cmask = pack_rows(PROMPTS, COMPLETIONS, pad_id=0)
    seen: dict = {}
    hook = qwen2.model.register_forward_pre_hook(lambda _m, _a, kw: seen.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            completion_logprobs(qwen2, input_ids, attn, pos, cmask.size(1))
    finally:
        hook.remove()
    assert torch.equal(seen["input_ids"], input_ids)
    assert torch.equal(seen["attention_mask"], attn)
    assert torch.equal(seen["position_ids"], torch.tensor([[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 2, 3]]))


def test_completion_logprobs_temperature_and_gradient(qwen2: torch.nn.Module) -> None:
    input_ids, attn, pos, cmask = pack_rows(PROMPTS, COMPLETIONS, pad_id=0)
    out = completion_logprobs(qwen2, input_ids, attn, pos, cmask.size(1), temperature=0.5)
    with torch.no_grad():
        logits = qwen2(input_ids=torch.tensor([PROMPTS[1] + COMPLETIONS[1]])).logits[0] / 0.5
        expected = logits.log_softmax(-1)[torch.arange(0, 3), torch.tensor(COMPLETIONS[1])]
    assert_close(out[1].detach(), expected, rtol=0, atol=1e-5)
    (out * cmask).sum().backward()  # gradients reach the decoder through the checkpointed chunks
    grads = [p.grad for p in qwen2.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert qwen2.get_output_embeddings().weight.grad.abs().max() > 0
    qwen2.zero_grad(set_to_none=True)

"""Token-level KD and SFT objectives: exact values on hand-computed distributions."""

from __future__ import annotations

import math

import pytest
import torch

from openrs_ray.learners.distill import nll, partition_logprobs, token_kl
from openrs_ray.learners.logprobs import completion_partition, completion_topk


def _log(xs: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor(xs, dtype=torch.float64))


def test_partition_adds_the_other_bucket():
    part = partition_logprobs(_log([0.5, 0.25]))
    assert torch.allclose(part.exp(), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))


def test_partition_of_the_whole_vocabulary_has_no_other_bucket():
    full = _log([0.5, 0.3, 0.2])
    assert torch.equal(partition_logprobs(full, vocab_size=3), full)


def test_partition_floors_a_vanishing_other_bucket():
    part = partition_logprobs(_log([0.5, 0.5]))  # top-k covers all the mass: 'other' is ~0, not -inf
    assert torch.isfinite(part).all() and part[-1] == pytest.approx(-60.0)


def test_forward_and_reverse_kl_hand_values():
    p_t, p_s = [0.5, 0.25, 0.25], [0.25, 0.25, 0.5]
    t, s = _log(p_t), _log(p_s)
    forward = sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))  # = 0.25 ln 2
    reverse = sum(b * math.log(b / a) for a, b in zip(p_t, p_s, strict=True))  # = 0.25 ln 2
    assert token_kl(s, t, "forward_kl").item() == pytest.approx(forward)
    assert forward == pytest.approx(0.25 * math.log(2))
    assert token_kl(s, t, "reverse_kl").item() == pytest.approx(reverse)
    asym_t, asym_s = _log([0.9, 0.1]), _log([0.5, 0.5])
    assert token_kl(asym_s, asym_t, "forward_kl").item() == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    assert token_kl(asym_s, asym_t, "reverse_kl").item() == pytest.approx(0.5 * math.log(5 / 9) + 0.5 * math.log(5))


def test_kl_is_zero_when_student_is_teacher():
    t = partition_logprobs(_log([0.6, 0.3]))
    assert token_kl(t, t, "forward_kl").item() == 0.0 and token_kl(t, t, "reverse_kl").item() == 0.0


def test_unknown_direction_is_an_error():
    with pytest.raises(ValueError, match="kd.loss"):
        token_kl(_log([1.0]), _log([1.0]), "jsd")


def test_nll_sums_masked_tokens():
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert nll(lp, mask).item() == pytest.approx(math.log(2) + math.log(4))


class _TinyLM(torch.nn.Module):
    """A causal LM shape (decoder + head) small enough to check the KD path against a direct computation."""

    base_model_prefix = "model"

    def __init__(self, vocab: int = 11, hidden: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = _Decoder(vocab, hidden)
        self.head = torch.nn.Linear(hidden, vocab, bias=False)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head


class _Decoder(torch.nn.Module):
    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, hidden)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        return type("Out", (), {"last_hidden_state": torch.tanh(self.emb(input_ids).cumsum(1))})()


@pytest.mark.parametrize("k", [3, 11])
def test_student_equal_teacher_gives_zero_kd_loss_through_the_model(k):
    lm = _TinyLM()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    attn, pos = torch.ones_like(ids), torch.arange(6).unsqueeze(0)
    top_ids, teacher = completion_topk(lm, ids, attn, pos, 4, k)
    student = completion_partition(lm, ids, attn, pos, top_ids, chunk_size=3)
    assert student.shape == (1, 4, k + (k < 11))
    assert torch.allclose(token_kl(student, teacher, "forward_kl"), torch.zeros(1, 4), atol=1e-6)
    with torch.no_grad():  # and the student's partition is the direct log-softmax, gathered
        direct = torch.log_softmax(lm.head(lm.model(ids).last_hidden_state[:, 1:5]), -1).gather(-1, top_ids)
    assert torch.allclose(student[..., :k], direct, atol=1e-6)


def test_kd_loss_gradient_moves_student_toward_teacher():
    lm, teacher_lm = _TinyLM(), _TinyLM()
    with torch.no_grad():
        teacher_lm.head.weight.mul_(3.0)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    attn, pos = torch.ones_like(ids), torch.arange(6).unsqueeze(0)
    top_ids, teacher = completion_topk(teacher_lm, ids, attn, pos, 4, 4)
    opt = torch.optim.SGD(lm.parameters(), lr=0.5)
    losses = []
    for _ in range(5):
        loss = token_kl(completion_partition(lm, ids, attn, pos, top_ids), teacher, "forward_kl").sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

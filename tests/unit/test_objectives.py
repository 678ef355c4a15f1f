"""Each stage's objective through its one signature, compute_loss(policy, mb, scale), with hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import pytest
import torch

from openrs_ray.config import RunConfig, Stage, load_config
from openrs_ray.learners.loss import LossInputs
from openrs_ray.learners.objectives import (
    OBJECTIVES,
    MicroBatch,
    PolicyGradient,
    TokenKD,
    TokenNLL,
    UpdateScale,
    objective_for,
    sft_nll,
    token_kd,
)

SMOKE = Path(__file__).resolve().parents[2] / "configs/smoke.yaml"
TEACHER = "kd.teacher={path: teacher}"


def _cfg(*overrides: str) -> RunConfig:
    return load_config(SMOKE, list(overrides))


class FixedPolicy:
    """Stands in for the CompletionLogprobs engine: returns the given tensor (a leaf with grad) and records how
    it was called, so a test sees the temperature and the top-k ids an objective passes."""

    def __init__(self, out: torch.Tensor) -> None:
        self.out = out.clone().requires_grad_(True)
        self.calls: list[dict] = []

    def __call__(self, input_ids, attention_mask, position_ids, completion_len, temperature=1.0, topk_ids=None):
        self.calls.append({"completion_len": completion_len, "temperature": temperature, "topk_ids": topk_ids})
        return self.out


def _mb(mask: list[list[float]], advantages: list[float], **extra: torch.Tensor) -> MicroBatch:
    b, c = len(mask), len(mask[0])
    ids = torch.zeros(b, c + 1, dtype=torch.long)
    return MicroBatch(ids, torch.ones_like(ids), ids, torch.tensor(mask), torch.tensor(advantages), **extra)


def test_every_stage_has_an_objective() -> None:
    assert set(OBJECTIVES) == set(get_args(Stage))
    assert type(objective_for(_cfg())) is PolicyGradient
    assert type(objective_for(_cfg("stage=sft"))) is TokenNLL
    assert type(objective_for(_cfg("stage=kd_seq", TEACHER))) is TokenNLL
    assert type(objective_for(_cfg("stage=kd_token", TEACHER))) is TokenKD


@pytest.mark.parametrize("stage", ["sft", "kd_seq"])
def test_token_nll_is_the_global_token_mean(stage: str) -> None:
    # NLL of the two real tokens: ln 2 + ln 4 = 3 ln 2; x gas 2 / 4 tokens per rank = 1.5 ln 2
    policy = FixedPolicy(torch.log(torch.tensor([[0.5, 0.25, 0.9]])))
    objective = objective_for(_cfg(f"stage={stage}", TEACHER, "generation.temperature=0.7"))
    loss, metrics = objective.compute_loss(policy, _mb([[1.0, 1.0, 0.0]], [0.0]), UpdateScale(4.0, 2))
    assert loss.item() == pytest.approx(1.5 * math.log(2))
    assert metrics == {"nll_sum": pytest.approx(3 * math.log(2))}
    loss.backward()  # d loss / d logprob = -mask * gas / tokens
    assert policy.out.grad.tolist() == [[-0.5, -0.5, 0.0]]
    assert policy.calls[0]["temperature"] == 1.0  # supervised: the model as is, whatever generation says


def test_token_kd_forward_and_reverse_hand_values() -> None:
    teacher = torch.log(torch.tensor([[[0.9, 0.1], [0.5, 0.5]]]))  # two positions, two-way partition
    student = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))  # the second position matches: KL 0
    topk = torch.tensor([[[3, 4], [5, 6]]])
    forward = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    reverse = 0.5 * math.log(5 / 9) + 0.5 * math.log(5)
    for direction, kl in (("forward_kl", forward), ("reverse_kl", reverse)):
        objective = objective_for(_cfg("stage=kd_token", TEACHER, f"kd.loss={direction}"))
        policy = FixedPolicy(student)
        mb = _mb([[1.0, 1.0]], [0.0], topk_ids=topk, teacher=teacher)
        loss, metrics = objective.compute_loss(policy, mb, UpdateScale(2.0, 1))
        assert loss.item() == pytest.approx(kl / 2)  # one token's KL over 2 tokens per rank
        assert metrics == {"kd_loss_sum": pytest.approx(kl)}
        assert policy.calls[0]["topk_ids"] is topk  # the student is scored on the teacher's top-k tokens


def test_policy_gradient_bnpo_with_importance_weights() -> None:
    # ratio 1 (one iteration); advantages [1, -0.5]; 3 real tokens. IS weights exp(old - sampling) capped at 2:
    # row 0: exp(ln 4) = 4 -> 2, exp(-ln 2) = 0.5; row 1: 1 (and 0 on padding).
    # per token -A * w: -2, -0.5, +0.5 -> bnpo = -2 / 3
    sampling = torch.tensor([[-math.log(4), math.log(2)], [0.0, 0.0]])
    objective = objective_for(_cfg("learner.loss_type=bnpo", "learner.importance_sampling_cap=2.0"))
    policy = FixedPolicy(torch.zeros(2, 2))
    loss, metrics = objective.compute_loss(
        policy, _mb([[1, 1], [1, 0]], [1.0, -0.5], sampling=sampling), UpdateScale(3, 1)
    )
    assert loss.item() == pytest.approx(-2 / 3)
    assert list(metrics)[0] == "loss" and metrics["loss"] == pytest.approx(-2 / 3)
    assert metrics["is_weight_mean"] == pytest.approx(3.5 / 3)
    assert metrics["clip_ratio"] == 0.0


def test_policy_gradient_dapo_divides_by_the_tokens_per_rank() -> None:
    objective = objective_for(_cfg("learner.loss_type=dapo", "learner.importance_sampling_correction=false"))
    loss, _ = objective.compute_loss(
        FixedPolicy(torch.zeros(2, 2)), _mb([[1, 1], [1, 0]], [1.0, -0.5]), UpdateScale(6, 1)
    )
    assert loss.item() == pytest.approx(-1.5 / 6)  # (-1 - 1 + 0.5) / 6 global tokens per rank


def test_what_each_objective_needs() -> None:
    rl = objective_for(_cfg("learner.beta=0.1", "generation.temperature=0.7"))
    assert rl.uses_reference() and not rl.uses_teacher_topk() and not rl.teacher_on_learner()
    assert rl.temperature() == pytest.approx(0.7)
    assert (
        objective_for(_cfg("learner.scale_logits_by_temperature=false", "generation.temperature=0.7")).temperature()
        == 1.0
    )
    assert not objective_for(_cfg("learner.beta=0")).uses_reference()
    sft = objective_for(_cfg("stage=sft", "learner.beta=0.1"))  # no reference outside rl, whatever beta says
    assert not sft.uses_reference() and not sft.uses_teacher_topk()
    kd = objective_for(_cfg("stage=kd_token", TEACHER, "kd.teacher_source=learner"))
    assert kd.uses_teacher_topk() and kd.teacher_on_learner()
    assert not objective_for(_cfg("stage=kd_token", TEACHER, "kd.teacher_source=vllm")).teacher_on_learner()


def test_a_user_loss_path_is_resolved_once_when_the_objective_is_built(tmp_path: Path) -> None:
    (tmp_path / "my_loss.py").write_text("def half(inputs):\n    return 0.5 * inputs.logprobs.sum(), {}\n")
    objective = objective_for(_cfg(f"learner.loss_type={tmp_path / 'my_loss.py'}:half"))
    loss, metrics = objective.compute_loss(FixedPolicy(torch.ones(1, 2)), _mb([[1, 1]], [1.0]), UpdateScale(2, 1))
    assert loss.item() == 1.0 and metrics == {"loss": 1.0}


def test_supervised_losses_say_what_they_miss() -> None:
    lp, mask = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(ValueError, match="teacher_logprobs"):
        token_kd(LossInputs(lp, lp, torch.zeros(1), mask, num_items_in_batch=2))
    with pytest.raises(ValueError, match="num_items_in_batch"):
        sft_nll(LossInputs(lp, lp, torch.zeros(1), mask))

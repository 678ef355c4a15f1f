"""DeepSpeed learner ranks on real gloo process groups: data-parallel equivalence, KL, mu > 1, schedule,
and an HF checkpoint that transformers and vLLM load unchanged."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import ray
import torch

from openrs_ray.config import load_config
from openrs_ray.generators.vllm_actor import VLLMGenerator
from openrs_ray.learners.group import LearnerGroup
from openrs_ray.types import TrainBatch
from tests.conftest import REPO

GROUPS, G = 4, 2


def _cfg(tiny_model: Path, *extra: str):
    base = [
        f"model.path={tiny_model}", "prompts_per_step=4", "generation.num_generations=2",
        "learner.micro_batch_size=2", "learner.loss_type=grpo", "learner.lr=1e-2", "max_steps=4",
    ]  # fmt: skip
    return load_config(REPO / "configs/smoke.yaml", [*base, *extra])


def _batch() -> TrainBatch:
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 500, (5 + g,), generator=gen).tolist() for g in range(GROUPS)]
    rows = [(prompts[g], torch.randint(3, 500, (6,), generator=gen).tolist()) for g in range(GROUPS) for _ in range(G)]
    return TrainBatch(
        prompt_ids=[p for p, _ in rows], completion_ids=[c for _, c in rows],
        advantages=[1.0 if i % 2 == 0 else -1.0 for i in range(len(rows))],
        sampling_logprobs=[[-1.0] * 6] * len(rows), weight_versions=[0] * len(rows), loss_weights=[1.0] * len(rows),
    )  # fmt: skip


def _train(cfg, steps: int = 3) -> tuple[LearnerGroup, list[dict]]:
    group = LearnerGroup(cfg)
    group.wait_ready()
    return group, [group.update(_batch()) for _ in range(steps)]


@pytest.fixture(scope="module")
def single(ray_local: None, tiny_model: Path):
    group, metrics = _train(_cfg(tiny_model, "learner.num_learners=1"))
    yield group, metrics
    group.shutdown()


@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_match_one_rank(single, tiny_model: Path, stage: int) -> None:
    group, metrics = _train(_cfg(tiny_model, "learner.num_learners=2", f"learner.zero_stage={stage}"))
    try:
        rank0, rank1 = group.full_states()
    finally:
        group.shutdown()
    reference, ref_metrics = single[0].full_states()[0], single[1]
    assert rank0.keys() == rank1.keys() == reference.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"ranks disagree on {name}"
    # The same gradients: global grad norms agree to 1e-5 relative at every step.
    assert [m["grad_norm"] for m in metrics] == pytest.approx([m["grad_norm"] for m in ref_metrics], rel=1e-5)
    # fp32 weights after 3 AdamW steps at lr 1e-2 (weights moved by ~2e-2). Only the order of the
    # gradient sums differs, and Adam's m/sqrt(v) magnifies that where a gradient is near zero.
    # Measured: ZeRO-2 max 1.4e-5 (1 element > 1e-5); ZeRO-3 max 2.1e-4 (93 of 361,600 > 1e-5).
    diff = torch.cat([(rank0[n] - reference[n]).abs().flatten() for n in rank0])
    assert diff.max().item() < 1e-3 and (diff > 1e-5).float().mean().item() < 1e-3


def test_kl_and_multiple_iterations(ray_local: None, tiny_model: Path) -> None:
    # ZeRO-3 shards the reference model too; gradient checkpointing recomputes the decoder in backward.
    cfg = _cfg(tiny_model, "learner.beta=0.1", "learner.num_iterations=2", "learner.zero_stage=3",
               "learner.gradient_checkpointing=true")  # fmt: skip
    group, metrics = _train(cfg, steps=2)
    group.shutdown()
    # First iteration of the first step: policy == reference, ratio == 1. The second iteration moved.
    assert metrics[0]["kl"] > 0 and metrics[1]["kl"] > metrics[0]["kl"]
    assert metrics[0]["ratio_mean"] != 1.0
    assert all(math.isfinite(m["loss"]) and m["grad_norm"] > 0 for m in metrics)


def test_nan_loss_skips_the_update(single) -> None:
    group = single[0]
    before = group.full_states()[0]
    bad = _batch()
    bad.advantages[0] = float("nan")
    m = group.update(bad)
    assert m["nonfinite_updates"] == 1.0
    after = group.full_states()[0]
    assert all(torch.equal(before[n], after[n]) for n in before)  # DeepSpeed skipped the step
    assert group.update(_batch())["nonfinite_updates"] == 0.0  # and training goes on


def test_cosine_with_min_lr_schedule(ray_local: None, tiny_model: Path) -> None:
    cfg = _cfg(tiny_model, "learner.lr_scheduler_type=cosine_with_min_lr", "learner.warmup_ratio=0.25",
               "learner.min_lr_rate=0.1")  # fmt: skip
    group, metrics = _train(cfg, steps=4)
    group.shutdown()
    # 4 steps, 1 warm-up step: lr after step k (Open-RS / transformers cosine_with_min_lr).
    expected = [1e-2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (k - 1) / 3))) for k in (1, 2, 3, 4)]
    assert [m["lr"] for m in metrics] == pytest.approx(expected)


def test_checkpoint_loads_in_transformers_and_vllm(single, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(single[0].save(str(tmp_path / "ckpt")))
    assert (path / "model.safetensors").is_file() and (path / "deepspeed").is_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompt = tok("Natalia sold 48 clips.", add_special_tokens=False)["input_ids"]
    hf = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12, eos_token_id=None)
    hf_tokens = hf[0, len(prompt) :].tolist()
    cfg = load_config(REPO / "configs/smoke.yaml", [f"model.path={path}"])
    engine = ray.remote(VLLMGenerator).remote(0, cfg)
    try:
        assert ray.get(engine.greedy.remote(prompt, 12), timeout=600) == hf_tokens[:12]
    finally:
        ray.kill(engine)

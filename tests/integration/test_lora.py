"""LoRA on real actors: DeepSpeed ranks (ZeRO-2 and ZeRO-3, 2 ranks) train only the adapters, engines get the
merged weights through both broadcast backends, checkpoints load in PEFT, transformers and vLLM, resume is
exact, and SFT and token-level KD with LoRA learn through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from openrs_ray.config import load_config
from openrs_ray.demo.tiny import make_tiny_model
from openrs_ray.generators.vllm_actor import VLLMGenerator
from openrs_ray.learners.group import LearnerGroup
from openrs_ray.stages.orchestrator import Orchestrator
from tests.conftest import REPO
from tests.integration.conftest import run_cli
from tests.integration.test_flow import COMPLETION, PROMPT, _max_diff
from tests.integration.test_learners import _batch, _cfg
from tests.integration.test_stages import COMMON, _metrics, facts  # noqa: F401 - the facts fixture

LORA = "learner.lora={r: 8, alpha: 16}"


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_zero3_two_ranks_kl_checkpoint_and_resume(ray_local: None, tiny_model: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = _cfg(tiny_model, LORA, "learner.num_learners=2", "learner.zero_stage=3", "learner.beta=0.1")
    group = LearnerGroup(cfg)
    try:
        group.wait_ready()
        before = group.logprobs(PROMPT, COMPLETION)
        metrics = [group.update(_batch()) for _ in range(2)]
        # The reference is the base with adapters off: PEFT starts B at 0, so step 1 has KL exactly 0.
        assert metrics[0]["kl"] == 0.0 and metrics[1]["kl"] > 0
        assert 0 < metrics[0]["trainable_params"] < 0.2 * metrics[0]["total_params"]
        rank0, rank1 = group.full_states()  # merged weights under base names, gathered on both ranks
        assert _states_equal(rank0, rank1) and "model.layers.0.self_attn.q_proj.weight" in rank0
        assert _max_diff(group.logprobs(PROMPT, COMPLETION), before) > 1e-3
        ckpt = Path(group.save(str(tmp_path / "ckpt")))
        after3 = (group.update(_batch()), group.full_states()[0])
        assert group.load(str(ckpt / "deepspeed"))  # back to step 2: weights, adapters' Adam state, schedule
        again3 = (group.update(_batch()), group.full_states()[0])
        assert again3[0]["grad_norm"] == after3[0]["grad_norm"] and _states_equal(again3[1], after3[1])
    finally:
        group.shutdown()
    # The adapter loads in PEFT and equals the merged checkpoint, which loads in transformers and vLLM.
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), ckpt / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(ckpt)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        assert (peft_model(ids).logits - merged(ids).logits).abs().max() < 1e-4
    hf = merged.generate(ids, do_sample=False, max_new_tokens=8, eos_token_id=None)[0, len(PROMPT) :].tolist()
    engine = ray.remote(VLLMGenerator).remote(0, load_config(REPO / "configs/smoke.yaml", [f"model.path={ckpt}"]))
    try:
        assert ray.get(engine.greedy.remote(PROMPT, 8), timeout=600) == hf
    finally:
        ray.kill(engine)


def _engine_matches_learner(flow: Orchestrator) -> None:
    learner = flow.learners.logprobs(PROMPT, COMPLETION)
    engine = flow.generators.prompt_logprobs(0, PROMPT + COMPLETION)[-len(COMPLETION) :]
    assert _max_diff(engine, learner) < 1e-3


def test_rl_flow_zero2_both_backends(ray_local: None, tiny_model: Path, tmp_path: Path) -> None:
    overrides = [
        f"model.path={tiny_model}", f"output_dir={tmp_path / 'run'}", LORA, "learner.lr=1e-2",
        f"data.path={REPO / 'configs/data/gsm8k_mini.jsonl'}", "learner.num_learners=2", "learner.zero_stage=2",
        "broadcast.backend=collective",
    ]  # fmt: skip
    flow = Orchestrator(load_config(REPO / "configs/smoke.yaml", overrides))
    try:
        flow.setup()
        before = flow.learners.logprobs(PROMPT, COMPLETION)
        metrics = [flow.step() for _ in range(2)]  # published on the collective channel
        assert [m["weight_version"] for m in metrics] == [1, 2]
        assert _max_diff(flow.learners.logprobs(PROMPT, COMPLETION), before) > 1e-3
        _engine_matches_learner(flow)
        flow.learners.update(_batch())  # one more update, sent through the object store
        meta, refs = flow.learners.export_weights(version=3)
        flow.generators.load_weights(refs, meta.version)
        _engine_matches_learner(flow)
    finally:
        flow.shutdown()


def _sft(out: Path, tiny_model: Path, data: Path, *extra: str) -> list[dict]:
    proc, left = run_cli(
        "train", "configs/smoke.yaml", *COMMON, f"output_dir={out}", f"model.path={tiny_model}", "stage=sft",
        f"data.path={data}", "learner.lr=1e-2", "checkpoint.save_steps=3", LORA, *extra,
    )  # fmt: skip
    assert proc.returncode == 0 and not left, proc.stderr[-4000:]
    return _metrics(out)


def test_sft_with_lora_learns_and_resumes_exactly(tiny_model: Path, facts: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "sft"
    nll = [m["nll"] for m in _sft(out, tiny_model, facts, "max_steps=6")]
    # The same 4 pairs every step: NLL must fall at every step (at lr 1e-2 it went 6.11 -> 4.39 in 6 steps).
    assert len(nll) == 6 and all(b < a for a, b in zip(nll, nll[1:], strict=False)) and nll[-1] < 0.75 * nll[0], nll
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["trainable_params"] < summary["total_params"]
    # Stop after the step-3 checkpoint, resume to step 6: the same NLL at every step.
    split = tmp_path / "split"
    _sft(split, tiny_model, facts, "max_steps=3")
    resumed = [m["nll"] for m in _sft(split, tiny_model, facts, "max_steps=6", "--resume", str(split))]
    assert resumed == pytest.approx(nll, rel=1e-4)


def test_unknown_target_module_is_one_line_error(tiny_model: Path, facts: Path, tmp_path: Path) -> None:  # noqa: F811
    proc, left = run_cli(
        "train", "configs/smoke.yaml", *COMMON, f"output_dir={tmp_path / 'bad'}", f"model.path={tiny_model}",
        "stage=sft", f"data.path={facts}", "learner.lora={target_modules: [q_proj, qkv_proj]}",
    )  # fmt: skip
    assert proc.returncode == 2 and not left, proc.stderr[-3000:]
    line = "openrs-ray: error: learner.lora.target_modules: 'qkv_proj' matches no module of the model"
    assert any(x.startswith(line) and "Traceback" not in x for x in proc.stderr.splitlines()), proc.stderr[-3000:]


def test_kd_token_with_lora_pulls_the_student_to_the_teacher(tiny_model: Path, facts: Path, tmp_path: Path) -> None:  # noqa: F811
    """Token-level KD through the LoRA policy with the teacher on the learner rank: only the adapters learn, and
    they pull the student towards a sharper teacher."""
    teacher = make_tiny_model(tmp_path / "teacher", seed=1)
    lm = AutoModelForCausalLM.from_pretrained(teacher)
    with torch.no_grad():  # a random tiny model is near-uniform, like the student: sharpen its logits 10x
        lm.model.norm.weight.mul_(10.0)
    lm.save_pretrained(teacher)
    out = tmp_path / "kd"
    proc, left = run_cli(
        "train", "configs/smoke.yaml", *COMMON, f"output_dir={out}", f"model.path={tiny_model}", "stage=kd_token",
        f"data.path={facts}", f"kd.teacher.path={teacher}", "kd.teacher_source=learner", "kd.top_k=16",
        "max_steps=3", "learner.lr=1e-2", LORA,
    )  # fmt: skip
    assert proc.returncode == 0 and not left, proc.stderr[-4000:]
    kd = [m["kd_loss"] for m in _metrics(out)]
    assert len(kd) == 3 and kd[0] > 0.01 and kd[-1] < 0.9 * kd[0] and kd[-1] == min(kd), kd
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["trainable_params"] < summary["total_params"]

"""SFT, token-level KD and the pipeline (sft → kd_seq → rl), end to end through the CLI on real actors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from openrs_ray.demo.tiny import make_tiny_model
from openrs_ray.rewards.math_answer import accuracy_reward
from tests.conftest import REPO
from tests.integration.conftest import run_cli

# Four problems with short answers: small enough for the tiny model to memorise in a few dozen SFT steps.
PROBLEMS = [("What is 3 + 4?", "7"), ("What is 2 + 2?", "4"), ("What is 5 + 1?", "6"), ("What is 9 - 6?", "3")]
COMMON = [
    "data.system_prompt=null", "prompts_per_step=4", "generation.num_generations=4",
    "generation.max_completion_length=64", "generation.max_prompt_length=64", "metrics.progress_bar=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("facts") / "facts.jsonl"
    rows = [{"question": q, "answer": a, "response": f"\\boxed{{{a}}}"} for q, a in PROBLEMS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _train(out: Path, *overrides: str) -> list[dict]:
    proc, left = run_cli("train", "configs/smoke.yaml", *COMMON, f"output_dir={out}", *overrides)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not left, f"processes left behind: {left}"
    return _metrics(out)


def test_sft_learns_the_references(tiny_model: Path, facts: Path, tmp_path: Path) -> None:
    m = _train(tmp_path / "sft", f"model.path={tiny_model}", "stage=sft", f"data.path={facts}", "max_steps=6",
               "learner.lr=3e-3", "learner.num_learners=2", "prompts_per_step=4")  # fmt: skip
    nll = [x["nll"] for x in m]
    assert len(nll) == 6 and nll[-1] < 0.7 * nll[0], nll  # the same 4 pairs every step: NLL must fall
    assert all(x["learner_tokens"] > 0 and len(x["prompt_uids"]) == 4 for x in m)
    final = tmp_path / "sft" / "checkpoints" / "step-6" / "policy"
    assert (final / "config.json").is_file() and (final / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("source", ["vllm", "learner"])
def test_kd_token_loss_is_zero_when_student_is_teacher(tiny_model: Path, facts: Path, tmp_path: Path, source: str):
    m = _train(tmp_path / source, f"model.path={tiny_model}", "stage=kd_token", f"data.path={facts}",
               f"kd.teacher.path={tiny_model}", f"kd.teacher_source={source}", "kd.top_k=8", "max_steps=1",
               "model.dtype=float32", "kd.teacher.dtype=float32")  # fmt: skip
    # vLLM's logprobs and the learner's differ by float rounding only (~1e-6 per token).
    assert abs(m[0]["kd_loss"]) < (1e-4 if source == "vllm" else 1e-6), m[0]["kd_loss"]
    assert m[0]["learner_tokens"] > 0


def test_kd_token_pulls_the_student_to_another_teacher(tiny_model: Path, facts: Path, tmp_path: Path) -> None:
    teacher = make_tiny_model(tmp_path / "teacher", seed=1)
    # A random tiny model is near-uniform, like the student; scaling its final norm sharpens its logits 10x.
    lm = AutoModelForCausalLM.from_pretrained(teacher)
    with torch.no_grad():
        lm.model.norm.weight.mul_(10.0)
    lm.save_pretrained(teacher)
    # Reverse KL starts from a near-uniform student against a sharp teacher: it falls, but more slowly.
    for loss, fall in (("forward_kl", 0.7), ("reverse_kl", 0.96)):
        m = _train(tmp_path / loss, f"model.path={tiny_model}", "stage=kd_token", f"data.path={facts}",
                   f"kd.teacher.path={teacher}", "kd.teacher_source=learner", f"kd.loss={loss}", "kd.top_k=16",
                   "max_steps=5", "learner.lr=3e-3")  # fmt: skip
        kd = [x["kd_loss"] for x in m]
        assert kd[0] > 0.01 and kd[-1] < fall * kd[0] and kd[-1] == min(kd), (loss, kd)


def test_pipeline_sft_then_kd_seq_then_rl(tiny_model: Path, facts: Path, tmp_path: Path) -> None:
    base = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    base["model"]["path"], base["data"]["path"] = str(tiny_model), str(facts)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    out = tmp_path / "pipe"
    sft_final = out / "sft" / "checkpoints" / "step-40" / "policy"
    stages = [
        {"name": "sft", "config": "base.yaml", "overrides": {"stage": "sft", "max_steps": 40, "learner.lr": 3e-3}},
        # The memorised SFT model is the teacher; the solutions it gets right are kept and trained on, through LoRA
        # adapters: the stage's checkpoint is the merged model, which the rl stage starts from.
        {"name": "kd", "config": "base.yaml", "overrides": {
            "stage": "kd_seq", "max_steps": 2, "kd.teacher.path": str(sft_final), "kd.num_solutions": 4,
            "kd.keep_per_problem": 2, "generation.temperature": 0.5, "learner.lora": {"r": 8, "alpha": 16}}},
        {"name": "rl", "config": "base.yaml", "overrides": {"stage": "rl", "max_steps": 2}},
    ]  # fmt: skip
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(out), "stages": stages}))
    overrides = [f"all.{o}" for o in COMMON]
    proc, left = run_cli("pipeline", str(path), *overrides, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not left, f"processes left behind: {left}"
    records = json.loads((out / "pipeline.json").read_text())
    assert [r["name"] for r in records] == ["sft", "kd", "rl"]
    assert records[0]["model"] == str(sft_final)
    # Each stage starts from the previous stage's final checkpoint.
    kd_cfg = yaml.safe_load((out / "kd" / "config.yaml").read_text())
    rl_cfg = yaml.safe_load((out / "rl" / "config.yaml").read_text())
    assert kd_cfg["model"]["path"] == str(sft_final) and rl_cfg["model"]["path"] == records[1]["model"]
    stats = json.loads((out / "kd" / "kd_seq" / "kd_seq.json").read_text())
    assert stats["problems"] == 4 and stats["sampled"] == 16 and 0 < stats["kept"] <= 8, stats
    kept = [json.loads(x) for x in (out / "kd" / "kd_seq" / "solutions.jsonl").read_text().splitlines()]
    assert len(kept) == stats["kept"] and all(accuracy_reward(k["messages"][-1]["content"], k["answer"]) for k in kept)
    assert [m["step"] for m in _metrics(out / "rl")] == [1, 2]
    kd_summary = json.loads((out / "kd" / "summary.json").read_text())
    assert 0 < kd_summary["trainable_params"] < kd_summary["total_params"]  # kd_seq trained adapters only
    assert (Path(records[1]["model"]) / "adapter").is_dir()  # the merged model rl started from, and the adapter
    rl_summary = json.loads((out / "rl" / "summary.json").read_text())
    # rl fine-tunes all of the merged model: the base's parameters, without the adapters kd counted on top.
    base = kd_summary["total_params"] - kd_summary["trainable_params"]
    assert rl_summary["trainable_params"] == rl_summary["total_params"] == base, (rl_summary, kd_summary)
    # Re-running continues: finished stages are skipped; a stage without DONE.json resumes from its checkpoint.
    (out / "rl" / "DONE.json").unlink()
    proc, left = run_cli("pipeline", str(path), *overrides, timeout=600)
    assert proc.returncode == 0 and not left, proc.stderr[-4000:]
    assert "stage sft already done" in proc.stdout and "stage kd already done" in proc.stdout
    assert "stage rl (rl) resumed" in proc.stdout and (out / "rl" / "DONE.json").is_file()


def test_evaluation_every_eval_steps_keeps_the_best_checkpoint(tiny_model: Path, facts: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft-eval"
    m = _train(out, f"model.path={tiny_model}", "stage=sft", f"data.path={facts}", "max_steps=40", "learner.lr=3e-3",
               "eval.eval_steps=20", f"eval.benchmarks=[{facts}]", "eval.temperature=0", "eval.max_new_tokens=16",
               "checkpoint.keep_last=1")  # fmt: skip
    evals = {p.name: json.loads(p.read_text()) for p in (out / "eval").glob("step-*.json")}
    assert set(evals) == {"step-0.json", "step-20.json", "step-40.json"}
    assert [x["step"] for x in m if "eval/average/pass@1" in x] == [20, 40]
    # The memorised answers are found by the evaluation (greedy): the harness scores real successes.
    assert m[-1]["eval/facts/pass@1"] > m[0].get("eval/facts/pass@1", 0.0) and m[-1]["eval/facts/pass@1"] > 0
    best = json.loads((out / "eval" / "best.json").read_text())["best"]
    assert best["step"] in (20, 40) and best["score"] == max(x.get("eval/facts/avg@1", 0) for x in m)
    # keep_last=1 prunes old checkpoints, but never the best evaluated one.
    assert Path(best["checkpoint"], "config.json").is_file(), best
    assert {p.name for p in (out / "checkpoints").glob("step-*")} == {"step-40", f"step-{best['step']}"}


def test_sft_resumes_exactly(tiny_model: Path, tmp_path: Path) -> None:
    args = [f"model.path={tiny_model}", "stage=sft", "data.path=configs/data/gsm8k_mini.jsonl",
            "generation.max_completion_length=512", "generation.max_prompt_length=256", "checkpoint.save_steps=2",
            "learner.lr=1e-3"]  # fmt: skip
    straight = _train(tmp_path / "straight", *args, "max_steps=4")
    _train(tmp_path / "split", *args, "max_steps=2")
    proc, left = run_cli(
        "train", "configs/smoke.yaml", *COMMON, *args, "max_steps=4", "--resume", str(tmp_path / "split")
    )
    assert proc.returncode == 0 and not left, proc.stderr[-3000:]
    resumed = _metrics(tmp_path / "split")
    assert [m["prompt_uids"] for m in resumed] == [m["prompt_uids"] for m in straight]
    assert len({u for m in straight for u in m["prompt_uids"]}) == 16  # GSM8K pairs, none repeated
    assert [m["nll"] for m in resumed] == pytest.approx([m["nll"] for m in straight], rel=1e-4)

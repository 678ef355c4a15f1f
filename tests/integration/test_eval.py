"""The evaluation harness on real actors: vLLM engines sample, the verifier pool judges with math-verify.

The tiny model is random, but its tokenizer was trained on arithmetic, so it writes digits: with one-digit gold
answers a sample is now and then right (rarely: estimators on mixed outcomes are checked in the unit tests). Every
number in the report is recomputed here from the stored completions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from openrs_ray.config import load_config
from openrs_ray.eval.report import flat_metrics
from openrs_ray.eval.runner import EvalHook, Evaluator
from openrs_ray.generators.group import GeneratorGroup
from openrs_ray.rewards.math_answer import accuracy_reward
from openrs_ray.rewards.pool import VerifierPool
from tests.conftest import REPO
from tests.integration.conftest import run_cli

K, MAX_NEW = 4, 200  # answers long enough that the tiny model writes digits
SUMS = 10  # "What is i + 0?" for i in 0..9: one-digit golds, so a random digit is sometimes right


def _write_benchmarks(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sums = folder / "sums.jsonl"
    sums.write_text("".join(json.dumps({"problem": f"What is {i} + 0?", "answer": str(i)}) + "\n" for i in range(SUMS)))
    # A worked solution as gold, a problem too long for the engines' context, and a gold nothing can parse.
    mixed = folder / "mixed.json"
    rows = [
        {"question": "Half of 8?", "solution": "8 / 2 = \\boxed{4}"},
        {"question": "Twice 3?", "solution": "\\boxed{6}"},
        {"question": "count " * 400, "solution": "\\boxed{1}"},
        {"question": "Name it.", "solution": ""},
    ]
    mixed.write_text(json.dumps(rows))
    return sums, mixed


@pytest.fixture(scope="module")
def actors(ray_local: None, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One engine and one verifier, configured like a training run (smoke.yaml: a 256 + 32 token context)."""
    root = tmp_path_factory.mktemp("eval")
    sums, mixed = _write_benchmarks(root / "data")
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        [
            f"model.path={tiny_model}", f"output_dir={root / 'run'}", "rewards.num_workers=1",
            f"eval.benchmarks=[{sums}, {mixed}]", f"eval.num_samples={K}", "eval.pass_k=[2, 4]",
            f"eval.max_new_tokens={MAX_NEW}", "eval.chunk_size=3", "eval.temperature=1.0", "eval.save_samples=true",
            "eval.eval_steps=10",
        ],
    )  # fmt: skip
    generators, verifiers = GeneratorGroup(cfg), VerifierPool(cfg)
    try:
        generators.wait_ready()
        yield cfg, generators, verifiers
    finally:
        generators.shutdown()
        verifiers.shutdown()


def _tokenizer(cfg):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.model.path)


def _pass_at_k(n: int, c: int, k: int) -> float:
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def _check_metrics(table: dict, rows: list[list[float]]) -> None:
    """The report's numbers, recomputed by hand from the stored per-sample correctness."""
    n = len(rows)
    means = [sum(r) / K for r in rows]
    avg = sum(means) / n
    assert table["pass@1"] == pytest.approx(sum(r[0] for r in rows) / n)
    assert table[f"avg@{K}"] == pytest.approx(avg)
    std = math.sqrt(sum((m - avg) ** 2 for m in means) / (n - 1))
    assert table[f"avg@{K}_stderr"] == pytest.approx(std / math.sqrt(n))
    for k in (2, 4):
        assert table[f"pass@{k}"] == pytest.approx(sum(_pass_at_k(K, int(sum(r)), k) for r in rows) / n)


def test_evaluator_report_matches_recount_from_completions(actors) -> None:
    cfg, generators, verifiers = actors
    results = Evaluator(cfg, _tokenizer(cfg)).run(generators, verifiers)
    out = Path(cfg.output_dir) / "eval"
    assert results["path"] == str(out / "final.json")
    assert json.loads((out / "final.json").read_text()) == {k: v for k, v in results.items() if k != "path"}
    samples = {s["uid"]: s for s in map(json.loads, (out / "final.samples.jsonl").read_text().splitlines())}
    assert len(samples) == SUMS + 4
    too_long, unparsable = samples.pop("eval/mixed:2"), samples.pop("eval/mixed:3")
    assert too_long["completions"] == [] and too_long["correct"] == [0.0] * K  # never generated: scored wrong
    assert len(unparsable["completions"]) == K
    for s in samples.values():  # the verifier's judgement is math-verify's on the stored completion
        assert s["correct"] == [accuracy_reward(c, s["answer"]) for c in s["completions"]] and len(s["correct"]) == K
    sums, mixed = results["benchmarks"]["sums"], results["benchmarks"]["mixed"]
    assert (sums["problems"], sums["too_long"], sums["unscored"]) == (SUMS, 0, 0)
    assert (mixed["problems"], mixed["too_long"], mixed["unscored"]) == (4, 1, 1)
    problems = results["problems"]["mixed"]
    assert [p["answer"] for p in problems] == ["4", "6", "1", ""] and problems[3]["unscored"]
    assert problems[2] == {"uid": "mixed:2", "answer": "1", "correct": [0.0] * K, "tokens": [], "too_long": True}
    for name in ("sums", "mixed"):  # the unparsable gold is left out, the too-long problem counts as wrong
        rows = [p["correct"] for p in results["problems"][name] if not p.get("unscored")]
        _check_metrics(results["benchmarks"][name], rows)
        tokens = [t for p in results["problems"][name] for t in p["tokens"]]
        assert 0 < max(tokens) <= MAX_NEW
        assert results["benchmarks"][name]["completion_tokens_mean"] == pytest.approx(sum(tokens) / len(tokens))
    assert results["average"]["pass@2"] == pytest.approx((sums["pass@2"] + mixed["pass@2"]) / 2)
    assert results["weight_versions"] == [0] and results["settings"]["pass_k"] == [2, 4]
    md = (out / "final.md").read_text()
    assert md.startswith("## Evaluation (final):") and f"| sums | {SUMS} |" in md and "| **average** |" in md
    assert "- mixed: 1 problems whose prompt does not fit the engine's context (scored wrong)" in md
    assert "- mixed: 1 problems whose gold answer cannot be parsed (left out of the metrics)" in md


def test_eval_hook_seeded_repeat_and_best(actors) -> None:
    """Seeded sampling: the same weights give the same samples, wherever they ran; a tie keeps the earlier best."""
    from rich.progress import BarColumn, Progress, TextColumn

    cfg, generators, verifiers = actors
    hook = EvalHook(cfg, cfg.output_dir, _tokenizer(cfg))
    first = hook.run(0, generators, verifiers)
    assert first["is_best"] and first["best"] == {
        "step": 0, "score": pytest.approx(first["average"][f"avg@{K}"]), "checkpoint": cfg.model.path
    }  # fmt: skip
    with Progress(TextColumn("{task.fields[info]}"), BarColumn()) as training_bar:  # the training loop's own bar
        training_bar.add_task("train", total=10, info="train")
        again = hook.run(10, generators, verifiers, checkpoint="ckpt/step-10", progress=training_bar)
    assert again["problems"] == first["problems"]  # same seed per request: the same samples
    assert not again["is_best"] and again["best"]["step"] == 0
    best = json.loads((Path(cfg.output_dir) / "eval/best.json").read_text())
    assert [h["checkpoint"] for h in best["history"]] == [cfg.model.path, "ckpt/step-10"]
    assert (Path(cfg.output_dir) / "eval/step-10.md").is_file()
    assert flat_metrics(again)[f"eval/average/avg@{K}"] == again["average"][f"avg@{K}"]


def test_per_call_sampling_overrides_leave_training_sampling_alone(actors) -> None:
    cfg, generators, _ = actors
    prompt = Evaluator(cfg, _tokenizer(cfg)).prompts["sums"][0]
    (train,) = generators.generate([prompt])
    assert len(train) == cfg.generation.num_generations
    assert all(len(r.completion_ids) <= cfg.generation.max_completion_length for r in train)
    sampling = {"n": 3, "max_tokens": 5, "temperature": 1.0, "seed": 7}
    (group,) = generators.generate([prompt], sampling)
    assert len(group) == 3 and all(len(r.completion_ids) <= 5 for r in group)
    (again,) = generators.generate([prompt, prompt], sampling)[1:]  # another batch, the same seeded samples
    assert [r.completion_ids for r in again] == [r.completion_ids for r in group]
    with pytest.raises(Exception, match="unknown sampling override"):
        generators.generate([prompt], {"logprobs": 5})


def test_rollout_logprobs_and_text_are_the_engines(actors) -> None:
    """The flat sampling logprobs line up with the completion's tokens (the engine scores the same tokens alike),
    and the text decoded once after generation is the tokens' text."""
    cfg, generators, _ = actors
    prompt = Evaluator(cfg, _tokenizer(cfg)).prompts["sums"][0]
    (group,) = generators.generate([prompt], {"n": 2, "max_tokens": 24, "temperature": 1.0, "seed": 3})
    for r in group:
        assert len(r.sampling_logprobs) == len(r.completion_ids) > 0
        scored = generators.prompt_logprobs(0, r.prompt_ids + r.completion_ids)[-len(r.completion_ids) :]
        assert r.sampling_logprobs == pytest.approx(scored, abs=1e-3)
        assert r.completion_text == _tokenizer(cfg).decode(r.completion_ids, skip_special_tokens=True)


def test_eval_cli_end_to_end(tiny_model: Path, tmp_path: Path) -> None:
    sums, _ = _write_benchmarks(tmp_path / "data")
    config = tmp_path / "eval.yaml"
    tree = {
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(tiny_model), "dtype": "float32"},
        "eval": {"preset": "open_rs", "benchmarks": [str(sums)], "max_new_tokens": 16, "num_samples": 2},
        "rewards": {"num_workers": 1},
        "cluster": {"num_cpus": 2, "object_store_memory_gb": 0.5},
    }
    config.write_text(yaml.safe_dump(tree))
    proc, left = run_cli("eval", str(config), "eval.chunk_size=4")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not left, f"processes left behind: {left}"
    assert f"| sums | {SUMS} |" in proc.stdout and f"results: {tmp_path / 'run/eval/final.json'}" in proc.stdout
    results = json.loads((tmp_path / "run/eval/final.json").read_text())
    assert results["settings"]["prompt_template"].startswith("Solve the following math problem efficiently")
    assert all(len(p["correct"]) == 2 for p in results["problems"]["sums"])
    assert (tmp_path / "run/eval/final.md").read_text() in proc.stdout
    prov = results["provenance"]  # a model folder from no run: its config.json's hash; this evaluation's record
    assert prov["checkpoint"]["model"] == str(tiny_model.resolve()) and prov["checkpoint"]["run"] is None
    assert prov["evaluation"]["benchmark_sources"] == {"sums": str(sums)} and prov["evaluation"]["packages"]["ray"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.benchmarks=[aime25]", "eval.benchmarks: unknown benchmark 'aime25'"),
        ("eval.benchmarks=[/nonexistent/set.jsonl]", "eval.benchmarks: file not found: /nonexistent/set.jsonl"),
        ("eval.benchmarks=[]", "eval.benchmarks: nothing to evaluate"),
        ("model.path=/nonexistent/model", "model.path"),
    ],
)
def test_eval_cli_errors_are_one_line(tiny_model: Path, override: str, message: str) -> None:
    proc, left = run_cli("eval", "configs/smoke.yaml", f"model.path={tiny_model}", override, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    err_lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(err_lines) == 1 and message in err_lines[0], proc.stderr[-3000:]
    assert not left, f"processes left behind: {left}"

"""Benchmark names, local files and hub layouts → problems with gold answers; EvalConfig presets; prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrs_ray.config import ConfigError, load_config, parse_config
from openrs_ray.config.eval import OPEN_RS_EVAL_PROMPT
from openrs_ray.data.sources import DataError
from openrs_ray.demo.tiny import build_tokenizer
from openrs_ray.eval import benchmarks as bm
from openrs_ray.eval.benchmarks import (
    BENCHMARKS,
    SHIPPED_DATA,
    benchmark_name,
    gold_text,
    last_boxed,
    load_benchmark,
)
from openrs_ray.eval.cli import standalone_config
from openrs_ray.eval.runner import EvalHook, Evaluator
from openrs_ray.rewards.math_answer import parse_gold
from openrs_ray.run.preflight import check_names
from tests.conftest import REPO


def test_names_resolve_case_and_punctuation_free() -> None:
    names = ["AIME24", "MATH-500", "AMC23", "Minerva", "OlympiadBench", "GSM8K"]
    assert [benchmark_name(n) for n in names] == ["aime24", "math500", "amc23", "minerva", "olympiadbench", "gsm8k"]
    assert {n: BENCHMARKS[n].hub_id for n in BENCHMARKS} == {
        "aime24": "HuggingFaceH4/aime_2024",
        "math500": "HuggingFaceH4/MATH-500",
        "amc23": "knoveleng/AMC-23",
        "minerva": "knoveleng/Minerva-Math",
        "olympiadbench": "knoveleng/OlympiadBench",
        "gsm8k": "openai/gsm8k",
    }
    assert benchmark_name("data/my_set.jsonl") == "my_set" and benchmark_name("d/my_set.json.gz") == "my_set"


def test_unknown_benchmark_is_a_config_error_naming_it() -> None:
    cfg = parse_config({"model": {"path": "m"}, "eval": {"benchmarks": ["math500", "aime25"]}})  # pre-flight checks
    with pytest.raises(ConfigError, match=r"^eval.benchmarks: unknown benchmark 'aime25'; known: aime24, math500"):
        check_names(cfg)


@pytest.mark.parametrize(
    ("name", "rows", "file", "first_answer"),
    [
        ("aime24", 30, "aime24.json.gz", "204"),
        ("MATH-500", 500, "math500.json.gz", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("gsm8k", 1319, "gsm8k_test.jsonl.gz", "18"),  # "... #### 18" reduced to the answer
    ],
)
def test_shipped_copies_by_default(name: str, rows: int, file: str, first_answer: str, tmp_path: Path) -> None:
    bench = load_benchmark(name)  # no data_dir: the copies inside the package, no network
    assert bench.source == str(SHIPPED_DATA / file) and len(bench.problems) == rows
    assert bench.problems[0].answer == first_answer and bench.problems[0].uid == f"{benchmark_name(name)}:0"
    assert all(p.problem and parse_gold(p.answer) is not None for p in bench.problems)  # every gold parses
    assert len(load_benchmark(name, tmp_path, max_problems=7).problems) == 7  # an empty data_dir: still shipped
    assert (SHIPPED_DATA / "LICENSE.deepscaler").is_file() and (SHIPPED_DATA / "LICENSE.grade-school-math").is_file()


def test_data_dir_copy_comes_before_the_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "aime24.jsonl").write_text(json.dumps({"problem": "my own", "answer": "\\boxed{5}"}) + "\n")
    bench = load_benchmark("aime24", tmp_path)
    assert bench.source == str(tmp_path / "aime24.jsonl") and [(p.problem, p.answer) for p in bench.problems] == [
        ("my own", "5")
    ]
    assert parse_config({"model": {"path": "m"}}).eval.data_dir is None  # the default points nowhere outside


def test_local_file_benchmark(tmp_path: Path) -> None:
    path = tmp_path / "mini.jsonl"
    rows = [
        {"question": "1+1?", "solution": "So \\boxed{\\frac{1}{2}} then \\boxed{2}."},
        {"question": "x", "solution": "7"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = load_benchmark(str(path))
    assert bench.name == "mini" and [(p.problem, p.answer) for p in bench.problems] == [("1+1?", "2"), ("x", "7")]
    with pytest.raises(ConfigError, match="^eval.benchmarks: file not found"):
        load_benchmark(str(tmp_path / "missing.json"))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "1+1", "answer": "2"}) + "\n")
    with pytest.raises(DataError, match="eval.benchmarks: bad has no problem column"):
        load_benchmark(str(tmp_path / "bad.jsonl"))


def test_gold_extraction() -> None:
    assert last_boxed("a \\boxed{x^{2}} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert last_boxed("no box") is None and last_boxed("\\boxed{unclosed") is None
    assert gold_text("work\n#### 1,072") == "1,072" and gold_text(204) == "204"
    assert gold_text(["$3$", "$5$"]) == "$3$, $5$"


# One row per hub dataset, in the column layout the hub serves (what Open-RS's lighteval tasks read).
HUB_ROWS = {
    "HuggingFaceH4/aime_2024": {"id": 60, "problem": "P", "solution": "S", "answer": "204", "url": "u", "year": "2024"},
    "HuggingFaceH4/MATH-500": {"problem": "P", "solution": "S \\boxed{3}", "answer": "3", "subject": "s", "level": 1},
    "knoveleng/AMC-23": {"id": 0, "question": "Q long", "problem": "P", "answer": 27.0, "url": "u"},
    "knoveleng/Minerva-Math": {"problem": "P", "solution": "so $\\boxed{7.5 \\times 10^{3}}$.", "type": "t", "idx": 0},
    "knoveleng/OlympiadBench": {"id": 1, "question": "P", "solution": ["S"], "final_answer": ["$2$"], "answer": "2"},
    "openai/gsm8k": {"question": "P", "answer": "work\n#### 72"},
}
GOLD = {"aime24": "204", "math500": "3", "amc23": "27.0", "minerva": "7.5 \\times 10^{3}", "olympiadbench": "2",
        "gsm8k": "72"}  # fmt: skip


def test_hub_layouts_without_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The hub call (id, config, split) and each dataset's columns; load_dataset stands in for the network."""
    import datasets

    calls = []

    def fake_load_dataset(path: str, name: str | None = None, split: str | None = None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([HUB_ROWS[path]] * 3)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(bm, "SHIPPED_DATA", tmp_path)  # no shipped copy either: every benchmark goes to the hub
    monkeypatch.setattr(bm, "hub_problem", lambda hub_id, repo_type: None)  # the hub answers
    for name, spec in BENCHMARKS.items():
        bench = load_benchmark(name, tmp_path, max_problems=2)  # empty data_dir: no local copy
        assert (
            bench.source == spec.hub_id and [(p.problem, p.answer) for p in bench.problems] == [("P", GOLD[name])] * 2
        )
        assert calls[-1] == (spec.hub_id, spec.config, spec.split)
    assert calls[-1] == ("openai/gsm8k", "main", "test") and calls[0] == ("HuggingFaceH4/aime_2024", None, "train")


def test_unreachable_hub_fails_in_seconds_naming_the_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A closed local port stands in for an unreachable hub: the real metadata request fails at once, and
    load_dataset (which would retry for ~25 s) is never called."""
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_benchmark("amc23", tmp_path)
    assert time.monotonic() - start < 10 and "\n" not in str(err.value)
    assert str(err.value).startswith("eval.benchmarks: cannot load amc23: no local copy (amc23.json/amc23.json.gz")
    assert f"in {tmp_path}, {SHIPPED_DATA} (set eval.data_dir" in str(err.value)
    assert "the hub (knoveleng/AMC-23) cannot serve it: " in str(err.value)


def test_offline_hub_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'knoveleng/AMC-23' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(bm, "hub_problem", lambda hub_id, repo_type: None)  # HF_HUB_OFFLINE: datasets reads its cache
    with pytest.raises(DataError) as err:
        load_benchmark("amc23")
    assert "\n" not in str(err.value) and str(err.value).endswith(
        "the hub (knoveleng/AMC-23) cannot serve it: Couldn't reach 'knoveleng/AMC-23' on the Hub "
        "(LocalEntryNotFoundError)"
    )


def test_presets_fill_only_unset_fields() -> None:
    cfg = parse_config({"model": {"path": "m"}, "eval": {"preset": "avg_k", "temperature": 1.0}})
    ec = cfg.eval
    assert (ec.num_samples, ec.temperature, ec.top_p, ec.system_prompt) == (16, 1.0, 0.95, None)
    assert ec.prompt_template == OPEN_RS_EVAL_PROMPT and ec.ks == [16] and ec.best_key == (None, "avg@16")
    open_rs = parse_config({"model": {"path": "m"}, "eval": {"preset": "open_rs", "max_new_tokens": 32768}}).eval
    assert (open_rs.num_samples, open_rs.temperature, open_rs.top_p, open_rs.max_new_tokens) == (1, 0.6, 0.95, 32768)
    assert open_rs.ks == [] and open_rs.best_key == (None, "avg@1")
    assert OPEN_RS_EVAL_PROMPT.startswith("Solve the following math problem efficiently and clearly.  The last line")
    assert "$\\boxed{ANSWER}$. I hope it is correct' (without quotes)" in OPEN_RS_EVAL_PROMPT
    assert OPEN_RS_EVAL_PROMPT.endswith("Think step by step before answering.\n\n{problem}")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.num_samples=2", "eval.pass_k=[4]"], "eval.pass_k: each k must be in 1..num_samples=2"),
        (["eval.num_samples=4", "eval.metric_for_best=pass@3"], "eval.metric_for_best: must be one of avg@k"),
        (["eval.prompt_template=Solve it"], "eval.prompt_template: must contain {problem}"),
        (["eval.preset=best"], "eval.preset: Input should be 'open_rs' or 'avg_k'"),
    ],
)
def test_bad_eval_settings_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        load_config(REPO / "configs/smoke.yaml", overrides)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _mini(tmp_path: Path) -> Path:
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps({"problem": f"{i} + 1 = ?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    return path


def test_evaluator_prompts_and_sampling(tokenizer, tmp_path: Path) -> None:
    eval_cfg = {"benchmarks": [str(_mini(tmp_path))], "preset": "avg_k", "num_samples": 3, "system_prompt": "Be brief."}
    cfg = parse_config({"model": {"path": "m"}, "output_dir": str(tmp_path), "eval": eval_cfg})
    ev = Evaluator(cfg, tokenizer)
    prompt = ev.prompts["mini"][2]
    user = OPEN_RS_EVAL_PROMPT.replace("{problem}", "2 + 1 = ?")
    assert prompt.text == f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )
    assert prompt.uid == "eval/mini:2" and prompt.answer == "3"
    assert prompt.token_ids == tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    assert ev.longest_prompt == max(len(p.token_ids) for p in ev.prompts["mini"])
    assert ev.sampling() == {"n": 3, "temperature": 0.6, "top_p": 0.95, "max_tokens": 4096, "seed": 0}
    assert ev.out_dir == tmp_path / "eval"
    # Standalone engines fit the longest prompt plus max_new_tokens, within the model's positions.
    engine = standalone_config(cfg, 300, max_positions=2048)  # generation.*: 512 + 256 by default
    assert (engine.generation.max_prompt_length, engine.generation.max_completion_length) == (512, 2048 - 512)
    assert [f.name for f in engine.rewards.functions] == ["accuracy"] and len(cfg.rewards.functions) == 2
    assert standalone_config(cfg, 700, None).generation.max_prompt_length == 700
    assert standalone_config(cfg, 300, None).generation.max_completion_length == 4096


def test_eval_hook_schedule(tokenizer, tmp_path: Path) -> None:
    base = {"model": {"path": "m"}, "max_steps": 25, "output_dir": str(tmp_path)}
    hook = EvalHook(
        parse_config({**base, "eval": {"benchmarks": [str(_mini(tmp_path))], "eval_steps": 10}}), tmp_path, tokenizer
    )
    assert [s for s in range(26) if hook.due(s)] == [0, 10, 20, 25]  # before step 1, every 10, after the last
    off = EvalHook(parse_config({**base, "eval": {"benchmarks": ["math500"]}}), tmp_path, tokenizer)
    assert off.evaluator is None and not any(off.due(s) for s in range(26))  # eval_steps 0: never (nothing loaded)
    bad = {"benchmarks": [str(_mini(tmp_path))], "eval_steps": 5, "metric_for_best": "math500/pass@1"}
    with pytest.raises(ConfigError, match="eval.metric_for_best: no benchmark 'math500' among \\['mini'\\]"):
        EvalHook(parse_config({**base, "eval": bad}), tmp_path, tokenizer)

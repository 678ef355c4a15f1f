"""PairSource (SFT / token-level KD data) and pipeline configs: real files, the tiny tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from openrs_ray.config import ConfigError, DataConfig, load_config
from openrs_ray.data.pairs import PairSource, reference_text
from openrs_ray.data.sources import DataError
from openrs_ray.demo.tiny import build_tokenizer
from openrs_ray.run.pipeline import final_model, load_pipeline
from openrs_ray.types import TrainBatch
from tests.conftest import REPO

GSM8K = REPO / "configs/data/gsm8k_mini.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_gsm8k_solution_becomes_boxed_reference():
    raw = "She sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert reference_text(raw) == "She sold 48/2 = 24 clips in May.\nThe answer is \\boxed{72}."
    assert reference_text("  plain text ") == "plain text"


def test_gsm8k_pairs(tokenizer):
    src = PairSource(DataConfig(path=str(GSM8K), system_prompt=None, seed=1), tokenizer, 512, 512)
    p = src.next_batch(2)[0]
    row = json.loads(GSM8K.read_text().splitlines()[int(p.uid.split(":")[1])])
    assert p.text.startswith("<|im_start|>user\n" + row["question"])
    assert p.reference == reference_text(row["answer"]) and p.reference.endswith(f"\\boxed{{{p.answer}}}.")
    ids = src.response_ids(p.reference)
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.decode(ids[:-1]) == p.reference


def test_too_long_responses_are_dropped_and_counted(tokenizer):
    src = PairSource(DataConfig(path=str(GSM8K), system_prompt=None), tokenizer, 512, 40)
    with pytest.raises(DataError, match="fits"):
        src.next_batch(1)  # no GSM8K solution is 40 tokens or fewer
    assert src.dropped_too_long == 64


def test_chat_messages_rows(tokenizer, tmp_path: Path):
    rows = [
        {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "\\boxed{2}"}]},
        {"messages": [{"role": "user", "content": "no reply"}]},  # malformed: counted, skipped
        {"messages": "not a list"},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = PairSource(
        DataConfig(path=str(path), messages_key="messages", system_prompt="S", shuffle=False), tokenizer, 64, 64
    )
    p = src.next_batch(1)[0]
    assert p.text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
    assert p.reference == "\\boxed{2}" and p.answer == ""
    src.next_batch(1)
    assert src.dropped_malformed == 2
    with pytest.raises(DataError, match="messages_key"):
        PairSource(DataConfig(path=str(path), messages_key="chat"), tokenizer, 64, 64)


def test_supervised_batch_shards_row_by_row():
    b = TrainBatch(
        [[1], [2], [3]], [[4], [5], [6]], [0.0] * 3, [[]] * 3, [0] * 3, [1.0] * 3, [[[7]]] * 3, [[[-0.1]]] * 3
    )
    s = b.shard(1, 2, 2, 1)
    assert s.prompt_ids == [[2], [2]] and s.loss_weights == [1.0, 0.0] and s.teacher_ids == [[[7]], [[7]]]
    assert TrainBatch([[1]], [[2]], [0.0], [[]], [0], [1.0]).select([0]).teacher_ids is None


def _write_pipeline(tmp_path: Path, stages: list[dict]) -> Path:
    base = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump({**base, "stage": "sft" if name == "a.yaml" else "rl"}))
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "stages": stages}))
    return path


def test_pipeline_chains_models_and_applies_overrides(tmp_path: Path):
    path = _write_pipeline(
        tmp_path, [{"name": "sft", "config": "a.yaml", "overrides": {"max_steps": 3, "learner.lr": 1e-4}},
                   {"name": "rl", "config": "b.yaml"}],
    )  # fmt: skip
    pipe, (sft, rl) = load_pipeline(path, ["rl.max_steps=5", "all.seed=7"])
    assert (sft.stage, sft.max_steps, sft.learner.lr, sft.seed) == ("sft", 3, 1e-4, 7)
    assert (rl.stage, rl.max_steps, rl.seed) == ("rl", 5, 7)
    assert sft.output_dir == str(tmp_path / "out" / "sft") and rl.output_dir == str(tmp_path / "out" / "rl")
    assert rl.model.path == str(final_model(tmp_path / "out" / "sft", sft))
    assert rl.model.path.endswith("sft/checkpoints/step-3/policy")
    assert sft.model.path == load_config(REPO / "configs/smoke.yaml").model.path


@pytest.mark.parametrize(
    ("stages", "overrides", "match"),
    [
        ([{"name": "x", "config": "a.yaml"}, {"name": "x", "config": "b.yaml"}], [], "unique"),
        ([{"name": "x", "config": "missing.yaml"}], [], "not found"),
        ([{"name": "x", "config": "a.yaml", "overrides": {"learner.lr": -1}}], [], "stage x .*learner.lr"),
        ([{"name": "x", "config": "a.yaml"}], ["y.max_steps=2"], "start with a stage name"),
        ([], [], "stages"),
    ],
)
def test_bad_pipelines_name_the_problem(tmp_path: Path, stages, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_pipeline(_write_pipeline(tmp_path, stages), overrides)


def test_kd_stage_needs_a_teacher():
    with pytest.raises(ConfigError, match="kd.teacher"):
        load_config(REPO / "configs/smoke.yaml", ["stage=kd_token"])


def test_inline_stages_defaults_and_output_dir_placeholder(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump({
            "output_dir": str(tmp_path / "o"),
            "prepare": {"tiny_model": {"hidden_size": 128}, "synthetic_data": {"n_sft": 5, "n_rl": 5, "n_heldout": 3}},
            "defaults": {"model": {"path": "{output_dir}/tiny-model"}, "learner": {"lr": 1e-3, "num_learners": 1}},
            "stages": [
                {"name": "sft", "settings": {"stage": "sft", "data": {"path": "{output_dir}/data/sft.jsonl"}}},
                {"name": "rl", "settings": {"data": {"path": "{output_dir}/data/rl.jsonl"}, "learner": {"lr": 1e-5}},
                 "overrides": {"eval.benchmarks": ["{output_dir}/data/heldout.jsonl"]}},
            ],
        })
    )  # fmt: skip
    pipe, (sft, rl) = load_pipeline(path, ["prepare.synthetic_data.seed=3"])
    out = str(tmp_path / "o")
    assert sft.model.path == f"{out}/tiny-model" and sft.data.path == f"{out}/data/sft.jsonl"
    assert (sft.learner.lr, rl.learner.lr, rl.learner.num_learners) == (1e-3, 1e-5, 1)  # settings over defaults
    assert rl.eval.benchmarks == [f"{out}/data/heldout.jsonl"] and pipe.prepare.synthetic_data.seed == 3
    from openrs_ray.demo.prepare import prepare

    assert [line.split(":")[1].split()[0] for line in prepare(pipe.prepare, out)] == ["wrote", "wrote"]
    assert [len((Path(out) / "data" / f"{s}.jsonl").read_text().splitlines()) for s in ("sft", "rl", "heldout")] == [
        5,
        5,
        3,
    ]
    assert [line.split(":")[1].split()[0] for line in prepare(pipe.prepare, out)] == ["reused", "reused"]


def test_shipped_demo_pipeline_loads():
    pipe, (sft, rl) = load_pipeline(REPO / "configs/demo.yaml")
    assert (sft.stage, rl.stage) == ("sft", "rl") and rl.eval.benchmarks == ["runs/demo/data/heldout.jsonl"]
    assert rl.generation.num_engines >= 2 and rl.rewards.num_workers >= 2 and rl.learner.num_learners == 2
    assert {f.name for f in rl.rewards.functions} == {
        "accuracy",
        "format",
    } and pipe.prepare.synthetic_data.n_heldout == 200

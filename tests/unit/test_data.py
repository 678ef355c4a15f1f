"""PromptSource and TrainBatch: real files, the tiny model's real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrs_ray.config import DataConfig
from openrs_ray.data.sources import DataError, PromptSource, gold_answer
from openrs_ray.demo.tiny import build_tokenizer
from openrs_ray.types import TrainBatch
from tests.conftest import REPO

GSM8K = REPO / "configs/data/gsm8k_mini.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_gold_answer_forms() -> None:
    assert gold_answer("48/2 = 24\n#### 1,072") == "1,072"
    assert gold_answer(" \\frac{1}{2} ") == "\\frac{1}{2}"
    assert gold_answer(18) == "18"


def test_gsm8k_prompts_rendered_and_ordered(tokenizer) -> None:
    src = PromptSource(DataConfig(path=str(GSM8K), seed=3, system_prompt="S"), tokenizer, 512)
    batch = src.next_batch(3)
    first = json.loads(GSM8K.read_text().splitlines()[int(batch[0].uid.split(":")[1])])
    assert batch[0].text.startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n" + first["question"])
    assert batch[0].text.endswith("<|im_start|>assistant\n")
    assert batch[0].answer == first["answer"].rsplit("####", 1)[1].strip()
    assert tokenizer.decode(batch[0].token_ids) == batch[0].text
    again = PromptSource(DataConfig(path=str(GSM8K), seed=3, system_prompt="S"), tokenizer, 512)
    assert [p.uid for p in again.next_batch(3)] == [p.uid for p in batch]  # seeded order


def test_epochs_cover_every_row(tokenizer) -> None:
    src = PromptSource(DataConfig(path=str(GSM8K), max_samples=5), tokenizer, 512)
    uids = [p.uid for p in src.next_batch(10)]
    assert sorted(uids[:5]) == sorted(uids[5:]) and len(set(uids)) == 5
    assert src.state()["epoch"] == 1


def test_long_prompts_dropped_and_counted(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"problem": "1+1", "answer": "2"}, {"problem": "x " * 400, "answer": "0"}]))
    src = PromptSource(DataConfig(path=str(path), shuffle=False, system_prompt=None), tokenizer, 32)
    assert [p.uid for p in src.next_batch(2)] == ["p:0", "p:0"]
    assert src.dropped_too_long == 1
    tiny = PromptSource(DataConfig(path=str(path), shuffle=False), tokenizer, 4)
    with pytest.raises(DataError, match="max_prompt_length"):
        tiny.next_batch(1)


def test_missing_columns(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"text": "1+1", "answer": "2"}) + "\n")
    with pytest.raises(DataError, match="data.prompt_key"):
        PromptSource(DataConfig(path=str(path)), tokenizer, 64)


def _batch(n: int) -> TrainBatch:
    return TrainBatch(
        prompt_ids=[[i] for i in range(n)], completion_ids=[[10 + i] for i in range(n)],
        advantages=[float(i) for i in range(n)], sampling_logprobs=[[-1.0]] * n,
        weight_versions=[0] * n, loss_weights=[1.0] * n,
    )  # fmt: skip


def test_shards_take_whole_groups_and_pad_with_zero_weight() -> None:
    b = _batch(6)  # three groups of two rows: [0, 1] [2, 3] [4, 5]
    s0, s1 = b.shard(0, 2, 4, 2), b.shard(1, 2, 4, 2)
    assert s0.prompt_ids == [[0], [1], [4], [5]] and s0.loss_weights == [1.0] * 4
    assert s1.prompt_ids == [[2], [3], [2], [2]] and s1.loss_weights == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="exceeds"):
        b.shard(0, 1, 4, 2)


def test_nonfinite_guard_counts_runs_in_a_row() -> None:
    from openrs_ray.stages.orchestrator import NonFiniteGuard

    guard = NonFiniteGuard(limit=2)
    assert [guard.observe(s) for s in (True, False, True, True)] == [False, False, False, True]
    assert guard.total == 3 and guard.in_a_row == 2

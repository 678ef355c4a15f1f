"""data.long_prompts: prompts over max_prompt_length are dropped (default) or kept whole for the generator
(truncate_left: the learner sees their last max_prompt_length tokens, as TRL did), up to the engine's context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrs_ray.config import DataConfig
from openrs_ray.data.sources import PromptSource
from openrs_ray.demo.tiny import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _source(tmp_path: Path, tokenizer, mode: str, context: int | None) -> tuple[PromptSource, dict[str, int]]:
    problems = {"short": "1+1", "long": "1+1 " * 20, "huge": "1+1 " * 200}
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": "2"}) + "\n" for q in problems.values()))
    cfg = DataConfig(path=str(path), shuffle=False, system_prompt=None, long_prompts=mode)
    src = PromptSource(cfg, tokenizer, 30, context)
    sizes = {k: len(tokenizer(src.render(q), add_special_tokens=False)["input_ids"]) for k, q in problems.items()}
    return src, sizes


def test_drop_is_the_default_and_counts(tmp_path: Path, tokenizer) -> None:
    src, sizes = _source(tmp_path, tokenizer, "drop", 300)
    assert sizes["short"] <= 30 < sizes["long"] < 300 < sizes["huge"]
    assert DataConfig(path="x.jsonl").long_prompts == "drop"
    assert [p.uid.split(":")[1] for p in src.next_batch(2)] == ["0", "0"]  # the only usable row, epoch after epoch
    assert src.dropped_too_long == 2  # rows 1 and 2, once each


def test_truncate_left_keeps_prompts_that_fit_the_engine(tmp_path: Path, tokenizer) -> None:
    src, sizes = _source(tmp_path, tokenizer, "truncate_left", 300)
    short, long, short_again = src.next_batch(3)
    assert (short.uid, long.uid, short_again.uid) == ("p:0", "p:1", "p:0")
    assert len(long.token_ids) == sizes["long"] > 30  # whole: the generator sees all of it
    assert src.dropped_too_long == 1  # the one over the engine's context (299 prompt tokens + 1 to sample)

"""The Open-RS switches together through `openrs-ray train`: real vLLM (prompts longer than max_prompt_length
generated whole), real verifier pool in open_rs mode, real DeepSpeed learner on left-truncated prompts at
temperature-1 logprobs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import run_cli

OPEN_RS_SWITCHES = [
    "data.long_prompts=truncate_left", "rewards.accuracy_mode=open_rs", "rewards.unparsable_gold=reward_one",
    "rewards.cosine_clamp=false", "learner.scale_logits_by_temperature=false",
]  # fmt: skip


def test_open_rs_switches_train_end_to_end(smoke_overrides: list[str], out_dir: Path) -> None:
    # gsm8k_mini's prompts are 64-279 tokens with the tiny tokenizer: all but one are over 64, all fit 64 + 256.
    shape = ["max_steps=1", "generation.max_prompt_length=64", "generation.max_completion_length=256"]
    proc, left = run_cli("train", "configs/smoke.yaml", *smoke_overrides, *shape, *OPEN_RS_SWITCHES,
                         f"output_dir={out_dir}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not left, f"processes left behind: {left}"
    (m,) = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert m["dropped_too_long"] == 0 and m["dropped_unparsable"] == 0
    assert m["groups_trained"] == 2 and m["completion_tokens"] > 0 and m["learner_tokens"] > 0

"""The 0.5B study's KD arm trains on teacher traces: the hub set's columns, or a local file with the same columns."""

from __future__ import annotations

import json
from pathlib import Path

from openrs_ray.config import load_config
from openrs_ray.data.pairs import PairSource
from openrs_ray.demo.tiny import build_tokenizer
from tests.conftest import REPO

TRACE = "<think>\nShe sold 48 / 2 = 24 in May, 48 + 24 = 72.\n</think>\nShe sold 48 + 24 = 72 clips: \\boxed{72}."


def test_kd_recipe_reads_a_local_trace_file_with_the_hub_columns(tmp_path: Path) -> None:
    rows = [{"problem": "Natalia sold 48 clips in April and half as many in May. How many in all?",
             "reasoning_solution": TRACE, "groud_truth_solution": "48/2 = <<48/2=24>>24\n#### 72"}]  # fmt: skip
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(REPO / "configs/srlm-0.5b-kd.yaml", [f"data.path={path}"])
    assert cfg.stage == "sft" and cfg.data is not None
    source = PairSource(cfg.data, build_tokenizer(), cfg.generation.max_prompt_length, 7680)
    (pair,) = source.next_batch(1)
    assert pair.reference == TRACE  # the teacher's trace, trained on as it is
    assert pair.answer == "72"  # the gold, from GSM8K's "#### 72"
    assert rows[0]["problem"] in pair.text and cfg.data.system_prompt in pair.text

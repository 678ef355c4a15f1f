"""accuracy_reward on every problem of the real benchmarks shipped in openrs_ray/eval/data.

For each problem, a completion that boxes its own gold answer must score 1.0, and one that boxes a
different problem's answer must score 0.0. Measured: 1,849 of 1,849 positives and 1,848 of 1,849
negatives; the one negative "miss" is no miss: MATH-500 #22's gold 5 and the next problem's gold x=5
are the same value, so it is excluded below as an equivalent pair.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from openrs_ray.data.sources import gold_answer
from openrs_ray.eval.benchmarks import SHIPPED_DATA
from openrs_ray.rewards import accuracy_reward
from tests.conftest import REPO

TRAIN_SUBSETS = REPO / "tests" / "data"
EQUIVALENT_PAIRS = {("5", "x=5")}  # (gold, other problem's gold) that are equal in value


def _rows(path: Path) -> list[dict]:
    text = gzip.decompress(path.read_bytes()).decode()
    return [json.loads(line) for line in text.splitlines()] if path.name.endswith(".jsonl.gz") else json.loads(text)


def _golds(name: str) -> list[str]:
    return [gold_answer(r["answer"]) for r in _rows(SHIPPED_DATA / name)]


def _other(golds: list[str], i: int) -> str:
    j = (i + 1) % len(golds)
    while golds[j].replace(" ", "") == golds[i].replace(" ", ""):
        j = (j + 1) % len(golds)
    return golds[j]


@pytest.mark.parametrize(
    ("name", "count"), [("math500.json.gz", 500), ("aime24.json.gz", 30), ("gsm8k_test.jsonl.gz", 1319)]
)
def test_own_answer_scores_one_and_other_answer_zero(name: str, count: int) -> None:
    golds = _golds(name)
    assert len(golds) == count
    pos_miss = [g for g in golds if accuracy_reward(f"Thinking... so the answer is \\boxed{{{g}}}", g) != 1.0]
    neg_miss = []
    for i, g in enumerate(golds):
        other = _other(golds, i)
        if (g, other) not in EQUIVALENT_PAIRS and accuracy_reward(f"Thinking... \\boxed{{{other}}}", g) != 0.0:
            neg_miss.append((g, other))
    assert pos_miss == [] and neg_miss == []


def test_every_gsm8k_train_solution_becomes_a_correct_sft_reference() -> None:
    """SFT on GSM8K's worked solutions: each rewritten reference (annotations dropped, '#### N' boxed)
    scores 1.0 against its own gold answer: every 5th of the 7,473 training problems (the shipped subset;
    all 7,473 passed when the full set was read)."""
    from openrs_ray.data.pairs import reference_text

    rows = _rows(TRAIN_SUBSETS / "gsm8k_train_subset.jsonl.gz")
    refs = [reference_text(r["answer"]) for r in rows]
    assert len(rows) == 1495 and not any("<<" in ref or "####" in ref for ref in refs)
    wrong = [
        i
        for i, (r, ref) in enumerate(zip(rows, refs, strict=True))
        if accuracy_reward(ref, gold_answer(r["answer"])) != 1.0
    ]
    assert wrong == []

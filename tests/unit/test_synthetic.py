"""The synthetic arithmetic task: seeded, correct, scored 1 by the real rewards, held-out kept out of training."""

from __future__ import annotations

import ast
import json
import operator
import random
from pathlib import Path

import pytest

from openrs_ray.config import DataConfig
from openrs_ray.data.sources import PromptSource, load_rows
from openrs_ray.demo.synthetic import LEVELS, SYSTEM_PROMPT, expression_of, make_problem, make_split, write_splits
from openrs_ray.demo.tiny import build_tokenizer
from openrs_ray.rewards import RewardContext, score_sample, tag_count_reward

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(expression: str) -> int:
    """Evaluate + - * over integer literals (no eval())."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError(f"unexpected node {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


def _check_steps(solution: str) -> None:
    """Every "x op y = z" line of the reasoning is itself correct."""
    think = solution.split("<think>\n", 1)[1].split("\n</think>\n", 1)[0]
    for line in think.splitlines():
        lhs, rhs = line.split("=")
        assert _evaluate(lhs) == int(rhs), line


@pytest.mark.parametrize("level", LEVELS)
def test_problems_are_correct_and_scored_one(level: int) -> None:
    rng = random.Random(level)
    for _ in range(200):
        row = make_problem(rng, level)
        assert set(row) == {"question", "answer", "solution", "difficulty"}
        assert row["difficulty"] == level
        assert int(row["answer"]) == _evaluate(expression_of(row["question"]))
        assert int(row["answer"]) >= 0
        _check_steps(row["solution"])
        assert row["solution"].endswith("\\boxed{" + row["answer"] + "}")
    # The real reward functions, as the verifier combines them: full marks for the SFT target.
    ctx = RewardContext(completion=row["solution"], gold=row["answer"], length=len(row["solution"]), max_len=200)
    total, parts = score_sample(ctx, {"accuracy": 1.0, "format": 1.0})
    assert parts == {"accuracy": 1.0, "format": 1.0} and total == 2.0
    assert tag_count_reward(row["solution"]) == 1.0


def test_wrong_answer_scores_zero_accuracy() -> None:
    row = make_problem(random.Random(0), 2)
    wrong = row["solution"].replace("\\boxed{" + row["answer"] + "}", "\\boxed{" + str(int(row["answer"]) + 1) + "}")
    _, parts = score_sample(RewardContext(wrong, row["answer"], 1, 1), {"accuracy": 1.0, "format": 1.0})
    assert parts == {"accuracy": 0.0, "format": 1.0}


def test_unknown_level_rejected() -> None:
    with pytest.raises(ValueError, match="unknown level"):
        make_problem(random.Random(0), 99)
    with pytest.raises(ValueError, match="unknown level"):
        make_split(4, 0, levels=(1, 7))
    with pytest.raises(ValueError, match="at least one"):
        make_split(4, 0, levels=())


def test_split_deterministic_by_seed_and_levels_cycle() -> None:
    a = make_split(40, seed=3)
    assert a == make_split(40, seed=3)
    assert a != make_split(40, seed=4)
    assert [row["difficulty"] for row in a[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert {row["difficulty"] for row in make_split(9, 0, levels=(2, 4))} == {2, 4}


def test_unique_split_and_exhaustion() -> None:
    rows = make_split(300, 0, levels=(4,), unique=True)
    assert len({row["question"] for row in rows}) == 300
    # Level 4 has 89 * 8 = 712 distinct problems: asking for more unique ones must fail, not loop forever.
    with pytest.raises(ValueError, match="no new problem"):
        make_split(800, 0, levels=(4,), unique=True)


def test_write_splits_disjoint_and_loadable(tmp_path: Path) -> None:
    paths = write_splits(tmp_path, seed=1, n_sft=400, n_rl=300, n_heldout=200)
    assert sorted(paths) == ["heldout", "rl", "sft"]
    rows = {name: load_rows(DataConfig(path=str(path))) for name, path in paths.items()}
    assert {name: len(r) for name, r in rows.items()} == {"sft": 400, "rl": 300, "heldout": 200}
    held = {row["question"] for row in rows["heldout"]}
    assert len(held) == 200  # no repeats within the held-out split
    assert not held & {row["question"] for row in rows["sft"] + rows["rl"]}
    for r in rows.values():
        assert {row["difficulty"] for row in r} == set(LEVELS)
    # Same seed, same files; each split has its own stream, so the held-out set ignores the training sizes.
    again = write_splits(tmp_path / "again", seed=1, n_sft=10, n_rl=10, n_heldout=200)
    assert again["heldout"].read_text() == paths["heldout"].read_text()
    assert json.loads(paths["sft"].read_text().splitlines()[0]) == rows["sft"][0]


def test_prompt_source_serves_synthetic_rows(tmp_path: Path) -> None:
    paths = write_splits(tmp_path, seed=0, n_sft=8, n_rl=8, n_heldout=8)
    tokenizer = build_tokenizer()
    cfg = DataConfig(path=str(paths["rl"]), system_prompt=SYSTEM_PROMPT, difficulty_shares={"1": 1, "4": 1})
    batch = PromptSource(cfg, tokenizer, max_prompt_length=64).next_batch(4)
    rows = [json.loads(line) for line in paths["rl"].read_text().splitlines()]
    for prompt in batch:
        row = rows[int(prompt.uid.split(":")[1])]
        assert prompt.answer == row["answer"]  # the "answer" column, not the worked "solution"
        assert row["difficulty"] in (1, 4)
        assert prompt.text.endswith(row["question"] + "<|im_end|>\n<|im_start|>assistant\n")

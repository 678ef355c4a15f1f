"""Synthetic arithmetic problems with worked solutions, for the from-nothing demo (tiny model: SFT, then GRPO).

Every problem is generated in code from a seeded `random.Random`, so a seed fully determines a split. A row is
`{"question", "answer", "solution", "difficulty"}`:

* `question`: short text, e.g. "What is 47 + 38?" (24-27 prompt tokens, chat-templated without a system prompt);
* `answer`: the integer result as text (the gold answer the accuracy reward compares against);
* `solution`: the whole assistant response an SFT target needs, in the layout the rewards score 1 on:
  "<think>\\n47+30=77\\n77+8=85\\n</think>\\n\\boxed{85}" (`format_reward` wants exactly one "\\n</think>\\n",
  `tag_count_reward` also one "<think>\\n", and `accuracy_reward` reads the last \\boxed{});
* `difficulty`: the level (an int, 1 = easiest), usable by `data.difficulty_shares`.

Levels (each step is one small operation written without spaces, "x+y=z", so a solution is 17-39 tokens of
the tiny model's tokenizer, digits being single tokens); every result is a non-negative integer:

1. a two-digit number plus or minus a digit, in one step ("47 - 8": "47-8=39"; 1,620 problems);
2. two-digit a + b or a - b (a >= b), split by the second operand's tens and ones ("47 + 38": "47+30=77",
   "77+8=85");
3. three operands, a two-digit start and two single-digit moves ("23 + 7 - 5": "23+7=30", "30-5=25");
4. a two-digit number times a digit, by tens and ones ("23 * 4": "20*4=80", "3*4=12", "80+12=92"; 712 problems).

Level 1 is not single-digit a + b on purpose: that space has only 100 problems, so a 200-problem held-out split
would withhold half of the addition table from training and test facts the model never saw.

`write_splits` writes `sft.jsonl`, `rl.jsonl` and `heldout.jsonl`; no held-out question occurs in either training
split, so the held-out accuracy measures generalisation to unseen problems of the same task.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LEVELS",
    "SYSTEM_PROMPT",
    "expression_of",
    "make_problem",
    "make_solution",
    "make_split",
    "write_splits",
]

LEVELS: tuple[int, ...] = (1, 2, 3, 4)
"""The difficulty levels `make_problem` knows."""

SYSTEM_PROMPT = "Think in <think> </think>, then give the answer in \\boxed{}."
"""An optional short system prompt for this task; the demo can use none (SFT teaches the format, and shorter
prompts make every step cheaper)."""

_QUESTION_PREFIX = "What is "
_MAX_DRAWS_PER_ROW = 1000  # unique splits: give up when the level's problem space is exhausted


def make_solution(steps: Sequence[str], answer: str) -> str:
    """The assistant response: the steps inside think tags, one per line, then the boxed answer."""
    return "<think>\n" + "\n".join(steps) + "\n</think>\n\\boxed{" + answer + "}"


def _chain(start: int, moves: Sequence[tuple[str, int]]) -> tuple[int, list[str]]:
    """Apply (+/-, operand) moves left to right; return the result and one "x+y=z" step per move."""
    value, steps = start, []
    for op, operand in moves:
        new = value + operand if op == "+" else value - operand
        steps.append(f"{value}{op}{operand}={new}")
        value = new
    return value, steps


def _level1(rng: random.Random) -> tuple[str, int, list[str]]:
    a, b = rng.randint(10, 99), rng.randint(1, 9)
    op = rng.choice("+-")
    value, steps = _chain(a, [(op, b)])
    return f"{a} {op} {b}", value, steps


def _level2(rng: random.Random) -> tuple[str, int, list[str]]:
    op = rng.choice("+-")
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if op == "-" and a < b:
        a, b = b, a
    tens, ones = b - b % 10, b % 10
    moves = [(op, tens)] + ([(op, ones)] if ones else [])
    value, steps = _chain(a, moves)
    return f"{a} {op} {b}", value, steps


def _level3(rng: random.Random) -> tuple[str, int, list[str]]:
    a = rng.randint(10, 99)
    moves: list[tuple[str, int]] = []
    value = a
    for _ in range(2):
        b = rng.randint(1, 9)
        op = "-" if value >= b and rng.random() < 0.5 else "+"
        moves.append((op, b))
        value = value + b if op == "+" else value - b
    value, steps = _chain(a, moves)
    text = f"{a}" + "".join(f" {op} {b}" for op, b in moves)
    return text, value, steps


def _level4(rng: random.Random) -> tuple[str, int, list[str]]:
    a, b = rng.randint(11, 99), rng.randint(2, 9)
    tens, ones = a - a % 10, a % 10
    steps = [f"{tens}*{b}={tens * b}"]
    if ones:
        steps += [f"{ones}*{b}={ones * b}", f"{tens * b}+{ones * b}={a * b}"]
    return f"{a} * {b}", a * b, steps


_LEVEL_MAKERS = {1: _level1, 2: _level2, 3: _level3, 4: _level4}


def make_problem(rng: random.Random, level: int) -> dict[str, Any]:
    """One problem of `level` drawn from `rng`: a row with question, answer, solution and difficulty.

    Raises:
        ValueError: for a level not in `LEVELS`.
    """
    maker = _LEVEL_MAKERS.get(level)
    if maker is None:
        raise ValueError(f"unknown level {level!r}; levels are {list(LEVELS)}")
    expression, value, steps = maker(rng)
    answer = str(value)
    return {
        "question": f"{_QUESTION_PREFIX}{expression}?",
        "answer": answer,
        "solution": make_solution(steps, answer),
        "difficulty": level,
    }


def expression_of(question: str) -> str:
    """The arithmetic expression a question asks about ("What is 3 + 5?" -> "3 + 5")."""
    if not (question.startswith(_QUESTION_PREFIX) and question.endswith("?")):
        raise ValueError(f"not a synthetic question: {question!r}")
    return question[len(_QUESTION_PREFIX) : -1]


def make_split(
    n: int,
    seed: int | str,
    levels: Sequence[int] = LEVELS,
    *,
    exclude: Collection[str] = (),
    unique: bool = False,
) -> list[dict[str, Any]]:
    """`n` problems cycling through `levels` in order (repeat a level to weight it), seeded by `seed`.

    Args:
        n: number of rows.
        seed: seeds the generator; the same arguments always give the same rows.
        levels: level of row i is `levels[i % len(levels)]`.
        exclude: questions never to emit (e.g. the held-out ones).
        unique: no question twice in the split (the held-out split); otherwise repeats are allowed, which
            a training split larger than a level's problem space needs.

    Raises:
        ValueError: no levels, an unknown level, or a level whose problems (minus `exclude`) run out.
    """
    if not levels:
        raise ValueError("levels must name at least one level")
    for level in levels:
        if level not in _LEVEL_MAKERS:
            raise ValueError(f"unknown level {level!r}; levels are {list(LEVELS)}")
    rng = random.Random(f"synthetic-arithmetic:{seed}")
    banned = set(exclude)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        level = levels[i % len(levels)]
        for _ in range(_MAX_DRAWS_PER_ROW):
            row = make_problem(rng, level)
            if row["question"] not in banned:
                break
        else:
            raise ValueError(f"level {level}: no new problem in {_MAX_DRAWS_PER_ROW} draws; ask for fewer rows")
        if unique:
            banned.add(row["question"])
        rows.append(row)
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_splits(
    out_dir: str | Path,
    seed: int = 0,
    n_sft: int = 2000,
    n_rl: int = 2000,
    n_heldout: int = 200,
    *,
    sft_levels: Sequence[int] = LEVELS,
    rl_levels: Sequence[int] = LEVELS,
    heldout_levels: Sequence[int] = LEVELS,
) -> dict[str, Path]:
    """Write `sft.jsonl`, `rl.jsonl` and `heldout.jsonl` under `out_dir`; return their paths by split name.

    The held-out split is drawn first (unique questions), and both training splits exclude its questions.
    Each split has its own seed stream, so changing one split's size leaves the others unchanged.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heldout = make_split(n_heldout, f"{seed}:heldout", heldout_levels, unique=True)
    held = {row["question"] for row in heldout}
    splits = {
        "sft": make_split(n_sft, f"{seed}:sft", sft_levels, exclude=held),
        "rl": make_split(n_rl, f"{seed}:rl", rl_levels, exclude=held),
        "heldout": heldout,
    }
    paths: dict[str, Path] = {}
    for name, rows in splits.items():
        paths[name] = out / f"{name}.jsonl"
        _write_jsonl(paths[name], rows)
    return paths

"""Difficulty mixing and the checkpointable cursor of PromptSource: real MATH rows (the shipped subset of the
MATH train set, tests/data), the tiny model's tokenizer."""

from __future__ import annotations

import gzip
import json
import math
import random
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from openrs_ray.config import DataConfig
from openrs_ray.data.mixing import QuotaPicker, level_name, parse_shares
from openrs_ray.data.sources import DataError, PromptSource
from openrs_ray.demo.tiny import build_tokenizer
from tests.conftest import REPO

MATH = REPO / "tests" / "data" / "math_train_subset.json.gz"
GSM8K = REPO / "configs/data/gsm8k_mini.jsonl"
LONG = 4096


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def math_rows() -> list[dict[str, Any]]:
    return json.loads(gzip.decompress(MATH.read_bytes()))


def _source(tokenizer: Any, path: Path = MATH, max_len: int = LONG, **kw: Any) -> PromptSource:
    return PromptSource(DataConfig(path=str(path), system_prompt=None, **kw), tokenizer, max_len)


def _levels(uids: list[str], rows: list[dict[str, Any]]) -> list[str]:
    return [level_name(rows[int(uid.rsplit(":", 1)[1])]["difficulty"]) for uid in uids]


def _uids(src: PromptSource, n: int) -> list[str]:
    return [p.uid for p in src.next_batch(n)]


def test_level_names_and_shares() -> None:
    assert [level_name(v) for v in (5.0, 5, "5.0", " 3 ", 2.5, "hard")] == ["5", "5", "5", "3", "2.5", "hard"]
    assert parse_shares({"1": 0.2, "3.0": 0.3, "5": 0.5}) == {"1": Fraction(1, 5), "3": Fraction(3, 10), "5": 0.5}
    assert parse_shares({"1": 1, "5": 3}) == {"1": Fraction(1, 4), "5": Fraction(3, 4)}
    assert parse_shares(None) is None


def test_half_and_half_is_exact_in_every_batch(tokenizer, math_rows) -> None:
    src = _source(tokenizer, difficulty_shares={"1": 0.5, "5": 0.5}, seed=1)
    total: Counter[str] = Counter()
    for _ in range(20):
        batch = Counter(_levels(_uids(src, 10), math_rows))
        assert batch == {"1": 5, "5": 5}  # the quota method keeps even prefixes exact, so each batch of 10 is
        total += batch
    assert total == {"1": 100, "5": 100}


def test_three_levels_within_quota_at_every_prompt(tokenizer, math_rows) -> None:
    shares = {"1": 0.2, "3": 0.3, "5": 0.5}
    src = _source(tokenizer, difficulty_shares=shares, seed=2)
    levels = _levels(_uids(src, 37) + _uids(src, 63), math_rows)
    assert Counter(levels) == {"1": 20, "3": 30, "5": 50}
    assert set(levels) <= set(shares)  # only named levels are drawn (2 and 4 never)
    counts: Counter[str] = Counter()
    for t, level in enumerate(levels, start=1):
        counts[level] += 1
        for name, s in shares.items():
            assert math.floor(s * t + 1e-9) <= counts[name] <= math.ceil(s * t - 1e-9), (t, name, counts)


def test_rows_of_a_level_are_distinct_within_its_epoch(tokenizer, math_rows) -> None:
    src = _source(tokenizer, difficulty_shares={"1": 1, "5": 3}, seed=4)
    uids = _uids(src, 400)
    by_level: dict[str, list[str]] = {}
    for uid, level in zip(uids, _levels(uids, math_rows), strict=True):
        by_level.setdefault(level, []).append(uid)
    assert len(by_level["1"]) == 100 and len(by_level["5"]) == 300
    assert all(len(set(v)) == len(v) for v in by_level.values())  # no repeat before a level's epoch ends


def test_same_seed_same_prompts_other_seed_differs(tokenizer) -> None:
    shares = {"1": 0.5, "5": 0.5}
    a, b = (_uids(_source(tokenizer, difficulty_shares=shares, seed=7), 30) for _ in range(2))
    assert a == b
    assert _uids(_source(tokenizer, difficulty_shares=shares, seed=8), 30) != a


@pytest.mark.parametrize(
    "kw",
    [
        {"difficulty_shares": {"1": 0.2, "3": 0.3, "5": 0.5}, "seed": 5},
        {"seed": 5},  # unmixed: the global epoch/index cursor
        {"seed": 5, "shuffle": False},
    ],
    ids=["mixing", "plain", "plain-unshuffled"],
)
def test_state_round_trip_mid_epoch(tokenizer, kw) -> None:
    src = _source(tokenizer, **kw)
    src.next_batch(7)
    state = json.loads(json.dumps(src.state()))  # what a checkpoint stores: JSON only
    fresh = _source(tokenizer, **kw)
    fresh.load_state(state)
    assert _uids(fresh, 13) == _uids(src, 13)
    assert fresh.state() == src.state()


def _small_math_file(tmp_path: Path, math_rows: list[dict[str, Any]], long_problem: bool = False) -> Path:
    # Three level-1 rows and four level-5 rows (one of them, optionally, far over the prompt limit), plus a
    # level-3 row that is never named: 20 prompts cross several per-level epochs.
    picked = [r for r in math_rows if r["difficulty"] == 1.0][:3] + [r for r in math_rows if r["difficulty"] == 5.0][:4]
    picked.append(next(r for r in math_rows if r["difficulty"] == 3.0))
    if long_problem:
        picked[4] = {**picked[4], "problem": "x " * 600}
    path = tmp_path / "math_small.json"
    path.write_text(json.dumps(picked))
    return path


def test_state_round_trip_across_level_epochs(tokenizer, math_rows, tmp_path) -> None:
    path = _small_math_file(tmp_path, math_rows)
    kw = {"difficulty_shares": {"1": 0.5, "5": 0.5}, "seed": 3}
    src = _source(tokenizer, path, **kw)
    first = _uids(src, 8)
    state = json.loads(json.dumps(src.state()))
    assert state["mixing"]["buckets"]["1"] == {"epoch": 1, "index": 1}  # level 1 (3 rows) is in its second epoch
    fresh = _source(tokenizer, path, **kw)
    fresh.load_state(state)
    rest = _uids(src, 12)
    assert _uids(fresh, 12) == rest
    uids = first + rest
    assert "math_small:7" not in uids  # the level-3 row is never drawn
    ones = [u for u in uids if int(u.split(":")[1]) < 3]
    assert len(ones) == 10 and all(sorted(ones[i : i + 3]) == [f"math_small:{j}" for j in range(3)] for i in (0, 3, 6))


def test_plain_round_trip_across_epochs(tokenizer) -> None:
    src = _source(tokenizer, GSM8K, max_samples=5, seed=2)
    src.next_batch(7)
    fresh = _source(tokenizer, GSM8K, max_samples=5, seed=2)
    fresh.load_state(json.loads(json.dumps(src.state())))
    assert _uids(fresh, 13) == _uids(src, 13) and src.state()["epoch"] == 3


def test_long_prompts_dropped_counted_and_shares_kept(tokenizer, math_rows, tmp_path) -> None:
    path = _small_math_file(tmp_path, math_rows, long_problem=True)
    src = _source(tokenizer, path, max_len=512, difficulty_shares={"1": 0.5, "5": 0.5}, shuffle=False)
    uids = _uids(src, 12)
    assert "math_small:4" not in uids and src.dropped_too_long == 2  # two passes over level 5's three usable rows
    assert Counter(_levels(uids, json.loads(path.read_text()))) == {"1": 6, "5": 6}
    assert src.state()["dropped_too_long"] == 2


def test_level_whose_every_prompt_is_too_long(tokenizer, tmp_path) -> None:
    path = tmp_path / "p.json"
    rows = [
        {"problem": "1+1", "answer": "2", "difficulty": 1.0},
        {"problem": "x " * 400, "answer": "0", "difficulty": 5},
    ]
    path.write_text(json.dumps(rows))
    src = _source(tokenizer, path, max_len=32, difficulty_shares={"1": 0.5, "5": 0.5}, shuffle=False)
    with pytest.raises(DataError, match="level '5'.*max_prompt_length=32"):
        src.next_batch(4)


@pytest.mark.parametrize(
    ("shares", "match"),
    [
        ({}, "empty"),
        ({"1": 0.0, "5": 1.0}, "level '1'"),
        ({"1": -0.5, "5": 1.0}, "level '1'"),
        ({"1": float("nan")}, "level '1'"),
        ({"5": 0.5, "5.0": 0.5}, "named twice"),
    ],
)
def test_bad_shares(tokenizer, shares, match) -> None:
    with pytest.raises(DataError, match=rf"data\.difficulty_shares.*{match}"):
        _source(tokenizer, difficulty_shares=shares)


def test_level_without_rows(tokenizer) -> None:
    with pytest.raises(
        DataError, match=r"data\.difficulty_shares: level\(s\) \['6'\].*\['0', '1', '2', '3', '4', '5'\]"
    ):
        _source(tokenizer, difficulty_shares={"1": 0.5, "6": 0.5})


def test_missing_difficulty_column(tokenizer) -> None:
    with pytest.raises(DataError, match=r"data\.difficulty_key: 'difficulty' not in"):
        _source(tokenizer, GSM8K, difficulty_shares={"1": 1.0})


def test_state_of_other_mode_or_levels_refused(tokenizer) -> None:
    plain = _source(tokenizer, max_samples=50)
    mixed = _source(tokenizer, max_samples=50, difficulty_shares={"2": 0.5, "5": 0.5})
    with pytest.raises(DataError, match="without difficulty mixing"):
        mixed.load_state(plain.state())
    with pytest.raises(DataError, match="with difficulty mixing"):
        plain.load_state(mixed.state())
    other = _source(tokenizer, max_samples=50, difficulty_shares={"3": 0.5, "5": 0.5})
    with pytest.raises(DataError, match="mixes levels"):
        other.load_state(mixed.state())
    with pytest.raises(DataError, match="saved over 50 rows"):
        _source(tokenizer, max_samples=40).load_state(plain.state())


def test_picker_within_quota_for_random_shares() -> None:
    rng = random.Random(0)
    for trial in range(300):
        weights = {str(k): float(rng.randint(1, 20)) for k in range(rng.randint(1, 6))}
        shares = parse_shares(weights)
        assert shares is not None
        picker = QuotaPicker(shares, seed=trial)
        for t in range(1, 200):
            picker.pick()
            for name, s in shares.items():
                assert math.floor(s * t) <= picker.counts[name] <= math.ceil(s * t), (weights, t)

"""Difficulty mixing for PromptSource: level names, share parsing, per-level cursors and the bucket picker.

Open-RS Experiment 2 trained on a mix of easy and hard MATH problems. Here the rows are bucketed by
difficulty level and each prompt draws from the bucket chosen by `QuotaPicker`, which keeps the number of
prompts taken from every level within one prompt of its target share at every point of the run.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any


class MixingError(ValueError):
    """Bad difficulty shares or levels; PromptSource re-raises it as its DataError."""


def level_name(value: Any) -> str:
    """The canonical name of a difficulty level: integral numbers lose their fraction (MATH's 5.0 → "5")."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    # "5.0" in a config or a string column names the same level as MATH's float 5.0.
    return str(int(number)) if number.is_integer() else text


def parse_shares(shares: dict[str, float] | None) -> dict[str, Fraction] | None:
    """Normalised target shares per level name, as exact fractions; None when mixing is off."""
    if shares is None:
        return None
    if not shares:
        raise MixingError("data.difficulty_shares: empty; name at least one level, or set it to null")
    parsed: dict[str, Fraction] = {}
    for key, value in shares.items():
        name = level_name(key)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise MixingError(f"data.difficulty_shares: share of level {key!r} must be a number > 0, got {value!r}")
        if name in parsed:
            raise MixingError(f"data.difficulty_shares: level {key!r} is named twice (both mean level {name!r})")
        # Going through the decimal text keeps 0.2 exactly 1/5, so 100 prompts give exactly 20, not 20.000...01.
        parsed[name] = Fraction(repr(float(value)))
    total = sum(parsed.values())
    return {name: share / total for name, share in parsed.items()}


def bucket_rows(levels: list[str], shares: dict[str, Fraction], key: str) -> dict[str, list[int]]:
    """Row ids per named level, in file order; a named level without rows is an error listing the levels present."""
    buckets: dict[str, list[int]] = {name: [] for name in shares}
    for row_id, level in enumerate(levels):
        if level in buckets:  # rows of levels not named are never drawn
            buckets[level].append(row_id)
    empty = [name for name, ids in buckets.items() if not ids]
    if empty:
        present = sorted(set(levels), key=_level_sort_key)
        raise MixingError(
            f"data.difficulty_shares: level(s) {empty} have no rows in column {key!r}; levels present: {present}"
        )
    return buckets


def _level_sort_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


class ShuffledCursor:
    """Walks a list of row ids epoch after epoch; each epoch has its own seeded order (or file order).

    The order of an epoch depends only on (seed_prefix, epoch), so a cursor is restored from two integers.
    """

    def __init__(self, row_ids: list[int], shuffle: bool, seed_prefix: str) -> None:
        self.row_ids, self.shuffle, self.seed_prefix = row_ids, shuffle, seed_prefix
        self.epoch, self.index = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(self.row_ids)
        if self.shuffle:
            random.Random(f"{self.seed_prefix}:{epoch}").shuffle(order)
        return order

    def __len__(self) -> int:
        return len(self.row_ids)

    def next(self) -> int:
        """The next row id, starting the next epoch when one ends."""
        # The epoch advances lazily (on the draw after the last row), so a cursor that just finished an
        # epoch still reports it; this is the behaviour PromptSource has always had.
        if self.index == len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._epoch_order(self.epoch)
        row_id = self._order[self.index]
        self.index += 1
        return row_id

    def state(self) -> dict[str, int]:
        """Epoch and position in it."""
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from `state()` of a cursor over the same rows and seed."""
        epoch, index = int(state["epoch"]), int(state["index"])
        if not 0 <= index <= len(self.row_ids) or epoch < 0:
            raise MixingError(f"cursor epoch={epoch} index={index} does not fit {len(self.row_ids)} rows")
        self.epoch, self.index = epoch, index
        self._order = self._epoch_order(epoch)


class QuotaPicker:
    """Chooses the level of each prompt so every level's count stays within its quota at every prompt.

    Method: the quota method of apportionment (Balinski & Young, 1975), applied one prompt at a time.
    After t prompts a level with share s has been drawn floor(s*t) or ceil(s*t) times. Among the levels
    that may still take a prompt without exceeding ceil(s*(t+1)), it picks the one with the largest
    s / (count + 1); a seeded generator breaks ties (e.g. which of two equal levels comes first).

    Why this and not random draws by weight or plain largest-deficit: random draws only match the shares in
    expectation (off by about sqrt(t) prompts), and largest-deficit lacks a proof of staying within quota.
    This rule is proven to stay within quota for every share vector and every t, so the shares are exact
    (whenever s*t is an integer) over the whole run, and any batch of n prompts holds between
    floor(s*n) - 1 and ceil(s*n) + 1 prompts of each level. Shares are exact fractions, so no rounding drifts.
    """

    def __init__(self, shares: dict[str, Fraction], seed: int) -> None:
        self.shares = shares
        self.counts = {name: 0 for name in shares}
        self.total = 0
        self.rng = random.Random(f"{seed}:difficulty-picker")

    def pick(self) -> str:
        """The level of the next prompt (counted as drawn)."""
        t = self.total + 1
        eligible = [name for name, s in self.shares.items() if self.counts[name] + 1 <= math.ceil(s * t)]
        best = max(self.shares[name] / (self.counts[name] + 1) for name in eligible)
        tied = [name for name in eligible if self.shares[name] / (self.counts[name] + 1) == best]
        # The generator is only consulted on ties, so the draw sequence is a pure function of (shares, seed).
        level = tied[0] if len(tied) == 1 else self.rng.choice(tied)
        self.counts[level] += 1
        self.total = t
        return level

    def state(self) -> dict[str, Any]:
        """Counts per level and the tie-break generator's state, all JSON-able."""
        version, internal, gauss_next = self.rng.getstate()
        return {
            "counts": dict(self.counts),
            "rng": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from `state()` of a picker with the same shares."""
        counts = {str(k): int(v) for k, v in state["counts"].items()}
        if set(counts) != set(self.shares):
            raise MixingError(
                f"data.difficulty_shares: checkpoint mixes levels {sorted(counts)}, config names {sorted(self.shares)}"
            )
        rng = state["rng"]
        self.rng.setstate((int(rng["version"]), tuple(int(x) for x in rng["internal"]), rng["gauss_next"]))
        self.counts, self.total = counts, sum(counts.values())

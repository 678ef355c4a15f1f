"""PromptSource: problems from a local json/jsonl/parquet file or a hub dataset, chat-rendered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openrs_ray.config import ConfigError, DataConfig
from openrs_ray.config.paths import check_data_file, local_format
from openrs_ray.data.mixing import MixingError, QuotaPicker, ShuffledCursor, bucket_rows, level_name, parse_shares
from openrs_ray.types import Prompt

PROMPT_KEYS = ("question", "problem", "prompt")
ANSWER_KEYS = ("answer", "solution")
# Columns user rewards do not get as kwargs (TRL passes the prompt positionally; the rest would collide with
# the function's own arguments); mirrored by openrs_ray.rewards.custom.RESERVED.
RESERVED_COLUMNS = frozenset({"prompt", "completion", "prompts", "completions", "completion_token_counts"})


class DataError(ValueError):
    """The data cannot be used: missing file or columns, or no usable prompt."""


def load_rows(cfg: DataConfig) -> list[dict[str, Any]]:
    """Rows of the dataset (datasets' loaders: local files and hub names go through the same code)."""
    from datasets import load_dataset

    path = Path(cfg.path).expanduser()
    fmt = local_format(path)
    if fmt is not None:
        if not path.is_file():
            raise DataError(f"data.path: file not found: {path}")
        try:  # empty or malformed files: one line naming the file and line, not datasets' traceback
            check_data_file(path)
        except ConfigError as err:
            raise DataError(str(err)) from None
        ds = load_dataset(fmt, data_files=str(path), split="train")
    else:
        ds = load_dataset(cfg.path, cfg.subset, split=cfg.split)
    if cfg.max_samples is not None:
        ds = ds.select(range(min(cfg.max_samples, len(ds))))
    return ds.to_list()


def _pick(row: dict[str, Any], explicit: str | None, candidates: tuple[str, ...], what: str) -> str:
    keys = (explicit,) if explicit else candidates
    for k in keys:
        if k in row:
            return k
    raise DataError(f"data.{what}_key: none of {list(keys)} in the data's columns {sorted(row)}")


def gold_answer(raw: Any) -> str:
    """The gold answer as text; GSM8K's worked solution keeps only what follows its last '####'."""
    text = str(raw)
    return text.rsplit("####", 1)[1].strip() if "####" in text else text.strip()


class PromptSource:
    """Serves prompts in a seeded order, epoch after epoch, with a checkpointable cursor.

    Without `difficulty_shares` every row is served once per epoch in a seeded order. With them, each
    prompt's difficulty level is chosen by a `QuotaPicker` (shares exact to within one prompt, see
    openrs_ray.data.mixing) and the row comes from that level's own seeded order, an epoch per level.
    Prompts longer than `max_prompt_length` tokens are dropped and counted; with data.long_prompts=truncate_left
    they are kept whole (the learner left-truncates them, as TRL did) unless they do not fit `context_length`,
    the generator's context (prompt + completion tokens), with room for one completion token.
    """

    def __init__(
        self,
        cfg: DataConfig,
        tokenizer: Any,
        max_prompt_length: int,
        context_length: int | None = None,
        keep_columns: bool = False,
    ) -> None:
        self.cfg, self.tokenizer, self.max_prompt_length = cfg, tokenizer, max_prompt_length
        self.keep_columns = keep_columns  # carry each row's columns to user reward functions
        self.longest_kept = max_prompt_length
        if cfg.long_prompts == "truncate_left":
            self.longest_kept = context_length - 1 if context_length is not None else 1 << 62
        self.rows = load_rows(cfg)
        if not self.rows:
            raise DataError(f"data.path: {cfg.path} has no rows")
        self._columns(self.rows[0])
        self.name = Path(cfg.path).stem
        self.dropped_too_long = 0
        self.limits = getattr(self, "limits", f"max_prompt_length={max_prompt_length}")
        # The unmixed cursor's seed prefix is the bare seed, which keeps the order of every run made before mixing.
        self._cursor = ShuffledCursor(list(range(len(self.rows))), cfg.shuffle, str(cfg.seed))
        self._picker: QuotaPicker | None = None
        self._buckets: dict[str, ShuffledCursor] = {}
        try:
            shares = parse_shares(cfg.difficulty_shares)
            if shares is not None:
                if cfg.difficulty_key not in self.rows[0]:
                    raise DataError(
                        f"data.difficulty_key: {cfg.difficulty_key!r} not in the data's columns {sorted(self.rows[0])}"
                    )
                levels = [level_name(row[cfg.difficulty_key]) for row in self.rows]
                for level, ids in bucket_rows(levels, shares, cfg.difficulty_key).items():
                    self._buckets[level] = ShuffledCursor(ids, cfg.shuffle, f"{cfg.seed}:level={level}")
                self._picker = QuotaPicker(shares, cfg.seed)
        except MixingError as e:
            raise DataError(str(e)) from e

    def _columns(self, row: dict[str, Any]) -> None:
        """Pick the problem and gold answer columns (a clear error when absent)."""
        self.prompt_key = _pick(row, self.cfg.prompt_key, PROMPT_KEYS, "prompt")
        self.answer_key = _pick(row, self.cfg.answer_key, ANSWER_KEYS, "answer")

    @property
    def epoch(self) -> int:
        """The current epoch (from 0) over all rows, or (mixing) the lowest epoch of any level."""
        if self._picker is None:
            return self._cursor.epoch
        return min(b.epoch for b in self._buckets.values())

    @property
    def index(self) -> int:
        """Position in the current epoch (unmixed); prompts drawn so far (mixing)."""
        return self._cursor.index if self._picker is None else self._picker.total

    def render(self, problem: str) -> str:
        """The chat-templated prompt text the generator sees."""
        messages = [{"role": "user", "content": problem}]
        if self.cfg.system_prompt:
            messages.insert(0, {"role": "system", "content": self.cfg.system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _make(self, row_id: int) -> Prompt | None:
        row = self.rows[row_id]
        text = self.render(str(row[self.prompt_key]))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.longest_kept:
            self.dropped_too_long += 1
            return None
        columns = {k: v for k, v in row.items() if k not in RESERVED_COLUMNS} if self.keep_columns else {}
        answer = gold_answer(row[self.answer_key])
        return Prompt(uid=f"{self.name}:{row_id}", text=text, token_ids=ids, answer=answer, columns=columns)

    def next_batch(self, n: int) -> list[Prompt]:
        """The next `n` usable prompts, moving into the next epoch when one ends."""
        if self._picker is not None:
            return [self._next_mixed(self._picker.pick()) for _ in range(n)]
        out: list[Prompt] = []
        scanned = 0
        while len(out) < n:
            prompt = self._make(self._cursor.next())
            scanned += 1
            if prompt is not None:
                out.append(prompt)
            elif scanned >= len(self.rows) and not out:
                raise DataError(f"no prompt in {self.cfg.path} fits {self.limits}")
        return out

    def _next_mixed(self, level: str) -> Prompt:
        # The level is picked once per usable prompt: an over-long row is replaced by the next row of the
        # same level, so drops never skew the shares.
        bucket = self._buckets[level]
        for _ in range(len(bucket)):
            prompt = self._make(bucket.next())
            if prompt is not None:
                return prompt
        raise DataError(
            f"data.difficulty_shares: no prompt of level {level!r} in {self.cfg.path} fits "
            f"max_prompt_length={self.max_prompt_length}"
        )

    def state(self) -> dict[str, Any]:
        """The cursor, for checkpoints: JSON-able, and enough for `load_state` to continue exactly."""
        state: dict[str, Any] = {"num_rows": len(self.rows), "dropped_too_long": self.dropped_too_long}
        if self._picker is None:
            state.update(self._cursor.state())
        else:
            state["mixing"] = {
                "buckets": {level: b.state() for level, b in self._buckets.items()},
                **self._picker.state(),
            }
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from `state()` of a PromptSource over the same data and config."""
        if int(state.get("num_rows", len(self.rows))) != len(self.rows):
            raise DataError(
                f"data.path: the cursor was saved over {state['num_rows']} rows, {self.cfg.path} has {len(self.rows)}"
            )
        mixing = state.get("mixing")
        if (mixing is None) != (self._picker is None):
            raise DataError(
                "data.difficulty_shares: the cursor was saved "
                f"{'without' if mixing is None else 'with'} difficulty mixing, the config has it "
                f"{'on' if self._picker is not None else 'off'}"
            )
        try:
            if self._picker is None:
                self._cursor.load_state(state)
            else:
                if set(mixing["buckets"]) != set(self._buckets):
                    raise MixingError(
                        f"data.difficulty_shares: the cursor mixes levels {sorted(mixing['buckets'])}, "
                        f"the config names {sorted(self._buckets)}"
                    )
                for level, bucket in self._buckets.items():
                    bucket.load_state(mixing["buckets"][level])
                self._picker.load_state(mixing)
        except MixingError as e:
            raise DataError(str(e)) from e
        self.dropped_too_long = int(state["dropped_too_long"])

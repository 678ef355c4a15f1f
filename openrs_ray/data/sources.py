"""PromptSource: problems from a local json/jsonl/parquet file or a hub dataset, chat-rendered."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from openrs_ray.config import DataConfig
from openrs_ray.types import Prompt

PROMPT_KEYS = ("question", "problem", "prompt")
ANSWER_KEYS = ("answer", "solution")
_LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """The data cannot be used: missing file or columns, or no usable prompt."""


def load_rows(cfg: DataConfig) -> list[dict[str, Any]]:
    """Rows of the dataset (datasets' loaders: local files and hub names go through the same code)."""
    from datasets import load_dataset

    path = Path(cfg.path).expanduser()
    fmt = _LOCAL_FORMATS.get(path.suffix)
    if fmt is not None:
        if not path.is_file():
            raise DataError(f"data.path: file not found: {path}")
        ds = load_dataset(fmt, data_files=str(path), split="train")
    else:
        ds = load_dataset(cfg.path, split=cfg.split)
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

    Prompts longer than `max_prompt_length` tokens are dropped and counted, never truncated.
    """

    def __init__(self, cfg: DataConfig, tokenizer: Any, max_prompt_length: int) -> None:
        self.cfg, self.tokenizer, self.max_prompt_length = cfg, tokenizer, max_prompt_length
        self.rows = load_rows(cfg)
        if not self.rows:
            raise DataError(f"data.path: {cfg.path} has no rows")
        self.prompt_key = _pick(self.rows[0], cfg.prompt_key, PROMPT_KEYS, "prompt")
        self.answer_key = _pick(self.rows[0], cfg.answer_key, ANSWER_KEYS, "answer")
        self.name = Path(cfg.path).stem
        self.epoch, self.index, self.dropped_too_long = 0, 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        if self.cfg.shuffle:
            random.Random(f"{self.cfg.seed}:{epoch}").shuffle(order)
        return order

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
        if len(ids) > self.max_prompt_length:
            self.dropped_too_long += 1
            return None
        return Prompt(uid=f"{self.name}:{row_id}", text=text, token_ids=ids, answer=gold_answer(row[self.answer_key]))

    def next_batch(self, n: int) -> list[Prompt]:
        """The next `n` usable prompts, moving into the next epoch when one ends."""
        out: list[Prompt] = []
        scanned = 0
        while len(out) < n:
            if self.index == len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            prompt = self._make(self._order[self.index])
            self.index += 1
            scanned += 1
            if prompt is not None:
                out.append(prompt)
            elif scanned >= len(self.rows) and not out:
                raise DataError(f"no prompt in {self.cfg.path} fits max_prompt_length={self.max_prompt_length}")
        return out

    def state(self) -> dict[str, int]:
        """The cursor, for checkpoints."""
        return {"epoch": self.epoch, "index": self.index, "dropped_too_long": self.dropped_too_long}

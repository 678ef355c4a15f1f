"""PairSource: (prompt, reference response) pairs for SFT and token-level KD, from columns or chat messages."""

from __future__ import annotations

import re
from typing import Any

from openrs_ray.config import DataConfig
from openrs_ray.data.sources import DataError, PromptSource, _pick, gold_answer
from openrs_ray.types import Prompt

RESPONSE_KEYS = ("response", "completion", "solution", "answer")


def reference_text(raw: Any) -> str:
    """The response to train on. GSM8K's worked solutions ("... <<48/2=24>>24 ... #### 72") lose their
    calculator annotations and end in \\boxed{72}, the answer format every reward and evaluation reads."""
    text = str(raw).strip()
    if "####" not in text:
        return text
    body, answer = text.rsplit("####", 1)
    body = re.sub(r"<<[^<>]*>>", "", body).strip()
    return f"{body}\nThe answer is \\boxed{{{answer.strip()}}}."


class PairSource(PromptSource):
    """Serves Prompts whose `reference` holds the response, with the same seeded, checkpointable order.

    Rows whose prompt or response is too long (prompt > max_prompt_length, response + EOS >
    max_response_length tokens) are dropped and counted, never truncated; malformed chat rows are
    counted in `dropped_malformed`.
    """

    def __init__(self, cfg: DataConfig, tokenizer: Any, max_prompt_length: int, max_response_length: int) -> None:
        self.max_response_length = max_response_length
        self.dropped_malformed = 0
        self.limits = f"max_prompt_length={max_prompt_length} with a response of at most {max_response_length} tokens"
        super().__init__(cfg, tokenizer, max_prompt_length)

    def _columns(self, row: dict[str, Any]) -> None:
        if self.cfg.messages_key:
            if self.cfg.messages_key not in row:
                raise DataError(f"data.messages_key: {self.cfg.messages_key!r} not in the data's columns {sorted(row)}")
            self.answer_key = next(
                (k for k in ((self.cfg.answer_key,) if self.cfg.answer_key else ()) if k in row), None
            )
            return
        super()._columns(row)
        # GSM8K has one column for both: the worked solution is the response, its '#### N' the gold answer.
        self.response_key = _pick(row, self.cfg.response_key, RESPONSE_KEYS, "response")

    def _split_messages(self, messages: Any) -> tuple[str, str] | None:
        """(chat-rendered prompt, response) of a messages row; None when it is not a chat ending in a reply."""
        ok = isinstance(messages, list) and messages and all(isinstance(m, dict) and "content" in m for m in messages)
        if not ok or messages[-1].get("role") != "assistant":
            return None
        context = [{"role": m["role"], "content": str(m["content"])} for m in messages[:-1]]
        if self.cfg.system_prompt and not any(m["role"] == "system" for m in context):
            context.insert(0, {"role": "system", "content": self.cfg.system_prompt})
        text = self.tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
        return text, str(messages[-1]["content"])

    def _make(self, row_id: int) -> Prompt | None:
        row = self.rows[row_id]
        if self.cfg.messages_key:
            pair = self._split_messages(row[self.cfg.messages_key])
            if pair is None:
                self.dropped_malformed += 1
                return None
            text, reference = pair
        else:
            text, reference = self.render(str(row[self.prompt_key])), reference_text(row[self.response_key])
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_prompt_length or len(self.response_ids(reference)) > self.max_response_length:
            self.dropped_too_long += 1
            return None
        answer = gold_answer(row[self.answer_key]) if self.answer_key else ""
        return Prompt(uid=f"{self.name}:{row_id}", text=text, token_ids=ids, answer=answer, reference=reference)

    def response_ids(self, reference: str) -> list[int]:
        """Tokens the learner is trained to produce: the response, then EOS (so the model learns to stop)."""
        return self.tokenizer(reference, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

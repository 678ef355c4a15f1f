"""Typed objects exchanged between the roles of the flow.

prompts → generators → verifier pool → rollout buffer → learners → weight broadcast → generators

Components never reference each other; they pass these plain dataclasses (cheap to pickle through
the Ray object store).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """One problem, rendered for the policy."""

    uid: str  # stable id: "<source>:<row>"; recorded per step so resume can be checked
    text: str  # chat-rendered prompt text, exactly what the generator sees
    token_ids: list[int]  # tokenised `text` (no truncation: over-long prompts are dropped upstream)
    answer: str  # gold answer (LaTeX, plain number, or GSM8K's "#### 18" already stripped)
    reference: str = ""  # reference response (SFT, token-level KD); empty for RL prompts
    # The dataset row's columns for user reward functions (kwargs, as TRL passes them); empty unless a
    # configured reward has a `function:` (rewards/custom.py). Not part of equality or hashing.
    columns: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Rollout:
    """One sampled completion of a prompt."""

    prompt_uid: str
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_text: str
    sampling_logprobs: list[float]  # logprob of each completion token under the sampling engine
    finish_reason: str  # "stop" or "length" (truncated)
    engine_id: int
    weight_version: int


@dataclass
class ScoredGroup:
    """All `num_generations` rollouts of one prompt, with their rewards."""

    prompt: Prompt
    rollouts: list[Rollout]
    rewards: list[float]  # combined, weighted reward per rollout
    # per reward function; None where the function does not apply to that rollout (user rewards)
    components: dict[str, list[float | None]] = field(default_factory=dict)
    weight_version: int = 0  # the oldest version among the rollouts
    dropped: bool = False  # gold answer unparsable: never trained on (counted, not silent)
    verify_errors: int = 0  # rollouts whose scoring raised (scored zero, counted)
    verify_timeouts: int = 0  # rollouts whose scoring ran past rewards.sample_timeout_s (scored zero)


@dataclass
class TrainBatch:
    """Rows of (prompt, completion) to train on; the learner pads them itself."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: list[float]
    sampling_logprobs: list[list[float]]
    weight_versions: list[int]
    loss_weights: list[float]  # 1.0 for real rows, 0.0 for rows that only pad a shard to equal length
    # Token-level KD from a vLLM teacher: per row, per completion token, the teacher's top-k token ids and
    # their logprobs ([C][k] each). None for every other objective.
    teacher_ids: list[list[list[int]]] | None = None
    teacher_logprobs: list[list[list[float]]] | None = None

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def _column(self, name: str, pick: slice | list[int]) -> list | None:
        col = getattr(self, name)
        if col is None:  # an optional column stays absent
            return None
        return col[pick] if isinstance(pick, slice) else [col[i] for i in pick]

    def select(self, pick: slice | list[int]) -> TrainBatch:
        return TrainBatch(*(self._column(f.name, pick) for f in fields(self)))

    def shard(self, rank: int, world_size: int, rows: int, group_size: int) -> TrainBatch:
        """Whole groups `rank::world_size`, padded to exactly `rows` rows.

        Groups stay whole on one rank (rows come group after group). Every learner must run the same
        number of backward passes (ZeRO reduces inside each), so a short shard (groups dropped upstream)
        is filled with copies of a row that carry zero loss weight.
        """
        groups = [list(range(g * group_size, (g + 1) * group_size)) for g in range(len(self) // group_size)]
        part = self.select([i for g in groups[rank::world_size] for i in g])
        if len(part) > rows:
            raise ValueError(f"shard of {len(part)} rows exceeds the {rows} rows a learner takes per step")
        src = part if len(part) else self
        pad = src.select([0] * (rows - len(part)))
        pad.loss_weights = [0.0] * len(pad)
        joined = (
            None if getattr(part, f.name) is None else getattr(part, f.name) + getattr(pad, f.name)
            for f in fields(self)
        )
        return TrainBatch(*joined)


@dataclass(frozen=True)
class WeightVersion:
    """A published set of policy weights."""

    version: int
    num_bytes: int
    num_tensors: int

"""Configuration of evaluation (`openrs-ray eval`, and evaluation every `eval_steps` while training)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from openrs_ray.config.sections import _Section

# Open-RS's lighteval MATH prompt (their src/open_r1/evaluate.py MATH_QUERY_TEMPLATE, adapted by open-r1 from
# simple-evals and Llama 3's evals), with `{problem}` where they put `{Question}`. Their tasks sent it as the
# user message through the chat template, with no system message.
OPEN_RS_EVAL_PROMPT = (
    "Solve the following math problem efficiently and clearly.  The last line of your response should be of the "
    "following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope it is correct' (without quotes) "
    "where ANSWER is just the final number or expression that solves the problem. Think step by step before "
    "answering.\n\n{problem}"
)

# Open-RS's evaluation: lighteval on vLLM, temperature 0.6, top_p 0.95, one sample per problem (pass@1).
_OPEN_RS = {"prompt_template": OPEN_RS_EVAL_PROMPT, "system_prompt": None, "temperature": 0.6, "top_p": 0.95}
PRESETS: dict[str, dict[str, Any]] = {
    "open_rs": {**_OPEN_RS, "num_samples": 1},
    # The same sampling, 16 samples per problem: avg@16 with its standard error, and unbiased pass@16.
    "avg_k": {**_OPEN_RS, "num_samples": 16},
}

_METRIC = re.compile(r"^(?:(?P<bench>[^/]+)/)?(?P<metric>avg@k|pass@(?P<k>\d+))$")


def _ks(pass_k: list[int], num_samples: int) -> list[int]:
    # pass@1 is the first sample's accuracy; the unbiased estimator at k=1 would only repeat avg@k.
    return sorted({k for k in pass_k if k > 1}) if pass_k else ([num_samples] if num_samples > 1 else [])


class EvalConfig(_Section):
    preset: Literal["open_rs", "avg_k"] | None = None
    """Fill the fields not set here: open_rs (Open-RS's lighteval prompt, no system message, temperature 0.6,
    top_p 0.95, one sample) or avg_k (the same with num_samples 16). max_new_tokens is never preset (Open-RS
    used 32768; it must fit the engine's context)."""
    benchmarks: list[str] = Field(default_factory=list)
    """Benchmark names (aime24, math500, amc23, minerva, olympiadbench, gsm8k; case, '-' and '_' are ignored) or
    local .jsonl/.json/.parquet files with problem/answer columns. Empty: no evaluation. (Names are checked at
    pre-flight, openrs_ray.run.preflight: the config does not import eval/.)"""
    data_dir: str | None = None
    """Folder (relative to the working directory) searched first for local copies of named benchmarks
    (aime24.json, math500.json, gsm8k_test.jsonl, or NAME.json/.jsonl/.parquet, each also .gz); then the copies
    shipped in the package (aime24, math500, gsm8k); then the hub. None: only the shipped copies, then the hub."""
    max_problems: int | None = Field(default=None, ge=1)
    """Evaluate only the first N problems of each benchmark (None: all)."""
    prompt_template: str = "{problem}"
    """User message of each problem; `{problem}` is replaced by the problem text (other braces are kept)."""
    system_prompt: str | None = None
    """System message put before each problem; None for none."""
    num_samples: int = Field(default=1, ge=1)
    """Samples per problem (k of avg@k)."""
    pass_k: list[int] = Field(default_factory=list)
    """k values (1..num_samples) of the unbiased pass@k estimator; empty: num_samples when it is > 1. pass@1 is
    always the first sample's accuracy (the unbiased pass@1 over all samples is avg@k)."""
    temperature: float = Field(default=0.6, ge=0)
    """Sampling temperature of evaluation (0: greedy)."""
    top_p: float = Field(default=0.95, gt=0, le=1)
    """Nucleus sampling threshold of evaluation."""
    max_new_tokens: int = Field(default=4096, ge=1)
    """Most tokens generated per answer (also bounded by the engine's context: prompt + answer)."""
    seed: int | None = 0
    """Base of each problem's sampling seed (mixed with the problem's id): its samples do not depend on which
    engine or batch drew them, and problems do not share sampling noise (None: the engines' own random state)."""
    chunk_size: int = Field(default=16, ge=1)
    """Problems per generator call; a few calls per engine stay in flight, so all engines work until the end."""
    eval_steps: int = Field(default=0, ge=0)
    """While training: evaluate every N steps (and before step 1 and after the last); 0: never."""
    metric_for_best: str = "avg@k"
    """Score that picks the best checkpoint (higher is better): avg@k, pass@1 or pass@N of the average over
    benchmarks, or of one benchmark as NAME/METRIC (e.g. math500/pass@1)."""
    timeout_s: float = Field(default=3600.0, gt=0)
    """Longest wait for the verifier's last scores once generation is done (later samples count as wrong, and are
    counted); `eval` also waits this long for one engine call (while training, generation.timeout_s applies)."""
    save_samples: bool = False
    """Also write every completion with its correctness to eval/NAME.samples.jsonl."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return {**PRESETS[data["preset"]], **data}  # fields set explicitly win over the preset
        return data

    @field_validator("prompt_template")
    @classmethod
    def _has_problem(cls, template: str) -> str:
        if "{problem}" not in template:
            raise ValueError("must contain {problem}, where the problem text goes")
        return template

    @field_validator("pass_k")
    @classmethod
    def _ks_fit(cls, pass_k: list[int], info: ValidationInfo) -> list[int]:
        n = info.data.get("num_samples", 1)
        if any(not 1 <= k <= n for k in pass_k):
            raise ValueError(f"each k must be in 1..num_samples={n}")
        return pass_k

    @field_validator("temperature")
    @classmethod
    def _greedy_single(cls, temperature: float, info: ValidationInfo) -> float:
        if temperature == 0 and info.data.get("num_samples", 1) > 1:
            raise ValueError("0 (greedy) gives the same answer every time: set num_samples=1")
        return temperature

    @field_validator("metric_for_best")
    @classmethod
    def _known_metric(cls, metric: str, info: ValidationInfo) -> str:
        ks = _ks(info.data.get("pass_k", []), info.data.get("num_samples", 1))
        match = _METRIC.match(metric)
        if match is None or (match["k"] and int(match["k"]) not in [1, *ks]):
            known = ", ".join(["avg@k", "pass@1", *(f"pass@{k}" for k in ks)])
            raise ValueError(f"must be one of {known}, optionally prefixed NAME/")
        return metric

    @property
    def ks(self) -> list[int]:
        """The k values of unbiased pass@k actually reported."""
        return _ks(self.pass_k, self.num_samples)

    @property
    def best_key(self) -> tuple[str | None, str]:
        """metric_for_best as (benchmark or None for the average, result key such as avg@16)."""
        match = _METRIC.match(self.metric_for_best)
        assert match is not None  # checked by the validator
        metric = f"avg@{self.num_samples}" if match["metric"] == "avg@k" else match["metric"]
        return match["bench"], metric

"""GenerateScore (openrs_ray/flow.py) with in-process stand-ins for the engines and the verifier pool."""

from __future__ import annotations

from typing import Any

from openrs_ray.flow import GenerateScore
from openrs_ray.types import Prompt


class Engines:
    """Two engines; records the number of batches in flight at each submit."""

    def __init__(self) -> None:
        self.engines = [object(), object()]
        self.log: list[tuple[str, list[str]]] = []

    def submit(self, prompts: list[Prompt], sampling: dict[str, Any] | None = None) -> tuple[list[Prompt], Any]:
        self.log.append(("submit", [p.uid for p in prompts]))
        return prompts, sampling

    def collect(self, pending: tuple[list[Prompt], Any]) -> list[list[str]]:
        prompts, sampling = pending
        self.log.append(("collect", [p.uid for p in prompts]))
        return [[f"{p.uid}:{sampling}"] for p in prompts]


class Verifiers:
    def score(self, groups: list[tuple[Prompt, list[str]]]) -> list[str]:
        return [f"scored {rollouts[0]}" for _, rollouts in groups]


def _prompts(n: int) -> list[Prompt]:
    return [Prompt(uid=f"p{i}", text="", token_ids=[1], answer="1") for i in range(n)]


def test_stream_keeps_a_window_per_engine_and_scores_each_chunk_in_order() -> None:
    engines = Engines()
    flow = GenerateScore(engines, Verifiers())  # type: ignore[arg-type]  (stand-ins)
    ps = _prompts(6)
    chunks = [ps[i : i + 1] for i in range(6)]
    out = list(flow.stream(chunks, per_engine=2, sampling={"n": 2}))
    assert out == [[f"scored p{i}:{{'n': 2}}"] for i in range(6)]
    # 2 per engine x 2 engines: four chunks go out before the first is collected, then one per collected chunk.
    kinds = [k for k, _ in engines.log]
    assert kinds[:5] == ["submit"] * 4 + ["collect"] and kinds.count("submit") == 6 and not flow.in_flight


def test_submit_next_keep_order_and_report_batches_in_flight() -> None:
    flow = GenerateScore(Engines(), Verifiers())  # type: ignore[arg-type]
    a, b = _prompts(2), _prompts(3)[2:]
    flow.submit(a)
    flow.submit(b)
    assert flow.batches_in_flight() == [a, b]
    prompts, rollouts = flow.next()
    assert prompts == a and rollouts == [["p0:None"], ["p1:None"]]
    assert flow.score(prompts, rollouts) == ["scored p0:None", "scored p1:None"]
    assert flow.batches_in_flight() == [b]

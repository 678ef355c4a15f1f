"""Checkpoints that resume exactly once: nothing lost, nothing trained twice.

A checkpoint is OUTPUT_DIR/checkpoints/step-N/ with
- policy/          HF weights + tokenizer (generators restart from them) and policy/deepspeed (optimizer,
                   scheduler, ZeRO partitions: learners restart from them);
- buffer.pkl       scored groups queued but not yet trained on;
- step.json        the step's metrics.jsonl line, so a driver killed between the save and the line's write
                   loses no line: resume restores it (see RunFolder);
- state.json       step, weight version, data cursor, driver RNG states, and the prompts of every
                   batch dispatched to the engines but not yet collected. Those are re-issued, in order,
                   on resume (their completions are sampled again), so each prompt is trained once.
state.json is written last, atomically: a folder without it is an interrupted save and is ignored.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from openrs_ray.types import Prompt, ScoredGroup

STATE = "state.json"
STEP_LINE = "step.json"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of `step` lives."""
    return Path(output_dir) / "checkpoints" / f"step-{step}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = Path(output_dir) / "checkpoints"
    done = [p for p in root.glob("step-*") if (p / STATE).is_file()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _rng_state() -> dict[str, Any]:
    return {"python": repr(random.getstate()), "torch": torch.get_rng_state().tolist()}


def _set_rng_state(state: dict[str, Any]) -> None:
    import ast

    random.setstate(ast.literal_eval(state["python"]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def write_state(
    path: Path,
    *,
    step: int,
    version: int,
    data: dict[str, Any],
    in_flight: list[list[Prompt]],
    buffered: list[ScoredGroup],
    line: dict[str, Any] | None = None,
) -> None:
    """Write the driver's part of a checkpoint (the learners wrote policy/ already); `line`: the step's
    metrics.jsonl line, written before state.json so that every complete checkpoint carries it."""
    with (path / "buffer.pkl").open("wb") as f:
        pickle.dump(buffered, f)
    if line is not None:
        (path / STEP_LINE).write_text(json.dumps(line))
    state = {
        "step": step,
        "weight_version": version,
        "data": data,
        "rng": _rng_state(),
        "in_flight": [[asdict(p) for p in batch] for batch in in_flight],
    }
    tmp = path / f"{STATE}.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path / STATE)  # atomic: marks the checkpoint complete


def read_state(path: Path) -> tuple[dict[str, Any], list[list[Prompt]], list[ScoredGroup]]:
    """State, in-flight prompt batches and buffered groups of a checkpoint; restores driver RNGs."""
    state = json.loads((path / STATE).read_text())
    _set_rng_state(state["rng"])
    in_flight = [[Prompt(**p) for p in batch] for batch in state["in_flight"]]
    with (path / "buffer.pkl").open("rb") as f:
        buffered = pickle.load(f)
    return state, in_flight, buffered


def saved_line(path: Path) -> dict[str, Any] | None:
    """The metrics.jsonl line a checkpoint carries (None: saved without one, e.g. by a failed step's save)."""
    file = path / STEP_LINE
    return json.loads(file.read_text()) if file.is_file() else None


def _best(output_dir: Path) -> Path | None:
    """The checkpoint folder eval/best.json names (the best evaluation so far), if any."""
    record = output_dir / "eval" / "best.json"
    if not record.is_file():
        return None
    best = (json.loads(record.read_text()).get("best") or {}).get("checkpoint")
    return Path(best).parent.resolve() if best else None


def prune(output_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints (and interrupted ones); the best evaluated
    checkpoint (eval/best.json) is always kept."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return
    best = _best(Path(output_dir))
    steps = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in steps if (p / STATE).is_file()]
    for p in steps:
        if p not in complete[-keep_last:] and p != steps[-1] and p.resolve() != best:
            shutil.rmtree(p, ignore_errors=True)

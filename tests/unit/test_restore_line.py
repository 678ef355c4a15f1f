"""A driver killed between a checkpoint's save and its metrics line's write loses no line: resume restores it.

The race CI met: the step-2 checkpoint was complete (state.json), the driver was SIGKILLed before metrics.jsonl got
step 2's line, and the resumed run went on with steps 3 and 4, so the run's record had no step 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openrs_ray.config import load_config
from openrs_ray.records.checkpoint import checkpoint_dir, saved_line, write_state
from openrs_ray.records.runlog import RunFolder
from openrs_ray.run.runner import _restore_line
from tests.conftest import REPO

LINES = [{"step": s, "reward_mean": s / 4, "prompt_uids": [f"gsm8k_mini:{s}"]} for s in (1, 2, 3)]
RESULTS = {  # the shape EvalHook.run returns (what flat_metrics reads)
    "settings": {"num_samples": 2, "pass_k": []},
    "benchmarks": {"mini": {"pass@1": 0.5, "avg@2": 0.25, "avg@2_stderr": 0.125}},
    "average": {"pass@1": 0.5, "avg@2": 0.25},
}


class _Driver:
    """What _restore_line asks of a driver: its step and the roles an evaluation runs on."""

    def __init__(self, step: int) -> None:
        self.step_idx = step

    def eval_targets(self) -> tuple[str, str]:
        return "generators", "verifiers"


class _Hook:
    """Evaluation due at every even step; records what it was asked to evaluate."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[str, ...], str]] = []

    def due(self, step: int) -> bool:
        return step % 2 == 0

    def run(self, step: int, *targets: str, checkpoint: str) -> dict[str, Any]:
        self.calls.append((step, targets, checkpoint))
        return RESULTS


def _killed_run(tmp_path: Path, line: dict[str, Any] | None) -> tuple[RunFolder, Path]:
    """Lines of steps 1 and 3 written, the step-2 checkpoint complete, and its line never written (the kill)."""
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"output_dir={tmp_path / 'run'}"])
    run = RunFolder(cfg)
    run.log(LINES[0])
    run.log(LINES[2])  # a later step of the killed run: resume re-runs it, so its line goes
    ckpt = checkpoint_dir(cfg.output_dir, 2)
    ckpt.mkdir(parents=True)
    write_state(ckpt, step=2, version=2, data={}, in_flight=[], buffered=[], line=line)
    run.close()
    return RunFolder(cfg, resume_step=2), ckpt


def _lines(run: RunFolder) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.metrics_path.read_text().splitlines()]


def test_the_checkpoints_line_is_restored_once(tmp_path: Path) -> None:
    run, ckpt = _killed_run(tmp_path, LINES[1])
    assert run.steps() == {1} and saved_line(ckpt) == LINES[1]
    _restore_line(ckpt, _Driver(2), run, hook=None)
    assert _lines(run) == LINES[:2]
    assert run.steps() == {1, 2}


def test_an_interrupted_evaluation_is_run_again_on_the_restored_weights(tmp_path: Path) -> None:
    run, ckpt = _killed_run(tmp_path, LINES[1])
    hook = _Hook()
    _restore_line(ckpt, _Driver(2), run, hook)
    assert hook.calls == [(2, ("generators", "verifiers"), str(ckpt / "policy"))]
    assert _lines(run)[1] == LINES[1] | {
        "eval/mini/pass@1": 0.5, "eval/mini/avg@2": 0.25, "eval/mini/avg@2_stderr": 0.125,
        "eval/average/pass@1": 0.5, "eval/average/avg@2": 0.25,
    }  # fmt: skip


def test_a_line_with_its_evaluation_is_not_evaluated_again(tmp_path: Path) -> None:
    evaluated = LINES[1] | {"eval/mini/pass@1": 1.0}
    run, ckpt = _killed_run(tmp_path, evaluated)
    hook = _Hook()
    _restore_line(ckpt, _Driver(2), run, hook)
    assert hook.calls == [] and _lines(run) == [LINES[0], evaluated]


def test_a_checkpoint_without_a_line_is_reported_not_invented(tmp_path: Path, capsys) -> None:
    run, ckpt = _killed_run(tmp_path, None)
    _restore_line(ckpt, _Driver(2), run, hook=None)
    assert _lines(run) == [LINES[0]]
    assert "metrics.jsonl has no line for step 2" in capsys.readouterr().out

"""training.png: which panels are drawn, the smoothed line over the raw points, held-out evaluation markers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from openrs_ray.records.summary import figure, held_out, panels, smooth, write_summary


def _rl_steps(kl: bool) -> list[dict[str, Any]]:
    return [
        {"step": s, "reward_mean": r, "accuracy_mean": r / 2, "completion_length_mean": 30.0 + s,
         "completion_tokens": 100 * s, "time_generate_s": 0.5, "clip_ratio": 0.01 * s, **({"kl": 0.1} if kl else {})}
        for s, r in ((1, 1.0), (2, 0.0), (3, 0.0))
    ]  # fmt: skip


def test_smoothing_is_debiased_ema() -> None:
    # weight 0.5: ema 0.5, 0.25, 0.125 over debias 0.5, 0.75, 0.875
    assert smooth([1.0, 0.0, 0.0], 0.5) == pytest.approx([1.0, 1 / 3, 1 / 7])
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0]) and smooth([]) == []


def test_kl_panel_only_with_kl_else_clip_ratio() -> None:
    titles = [t for _, t in panels(_rl_steps(kl=True))]
    assert titles == ["reward", "accuracy", "completion length (tokens)", "KL", "rollout tokens/s"]
    titles = [t for _, t in panels(_rl_steps(kl=False))]  # beta = 0: no KL is computed
    assert titles == ["reward", "accuracy", "completion length (tokens)", "clip ratio", "rollout tokens/s"]
    unclipped = [{**m, "clip_ratio": 0.0, "grad_norm": 0.5} for m in _rl_steps(kl=False)]  # on-policy: ratio 1
    assert [t for _, t in panels(unclipped)][3] == "grad norm"
    sft = [{"step": 1, "nll": 2.0, "grad_norm": 1.0, "lr": 1e-4}]
    assert [k for k, _ in panels(sft, {0: 0.1, 1: 0.2})] == ["nll", "grad_norm", "lr", "held_out"]


def test_figure_draws_raw_points_smoothed_line_and_eval_markers(tmp_path: Path) -> None:
    steps = _rl_steps(kl=False)
    steps[2]["eval/average/avg@8"] = 0.75  # logged with the step it evaluated
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "step-0.json").write_text(
        json.dumps({"settings": {"num_samples": 8}, "average": {"avg@8": 0.25, "pass@1": 0.5}})
    )  # the starting point is only in its file
    evals = held_out(tmp_path, steps)
    assert evals == {0: 0.25, 3: 0.75}
    fig = figure(steps, evals)
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert list(axes) == [
        "reward", "accuracy", "completion length (tokens)", "clip ratio", "rollout tokens/s",
        "held-out accuracy (eval)",
    ]  # fmt: skip
    raw, line = axes["reward"].get_lines()
    assert list(raw.get_ydata()) == [1.0, 0.0, 0.0] and raw.get_linestyle() == "None" and raw.get_marker() == "o"
    assert list(line.get_ydata()) == pytest.approx(smooth([1.0, 0.0, 0.0])) and line.get_linestyle() == "-"
    assert list(axes["clip ratio"].get_lines()[0].get_ydata()) == pytest.approx([0.01, 0.02, 0.03])
    assert list(axes["rollout tokens/s"].get_lines()[0].get_ydata()) == [200.0, 400.0, 600.0]
    [marks] = axes["held-out accuracy (eval)"].get_lines()
    assert list(marks.get_xdata()) == [0, 3] and list(marks.get_ydata()) == [0.25, 0.75] and marks.get_marker() == "D"
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in steps))
    _, png = write_summary(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_eval_no_held_out_panel(tmp_path: Path) -> None:
    assert held_out(tmp_path, _rl_steps(kl=True)) == {}
    assert "held-out accuracy (eval)" not in [ax.get_title() for ax in figure(_rl_steps(kl=True), {}).axes]

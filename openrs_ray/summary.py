"""The end-of-run summary: a table on the terminal, summary.json, and training.png in the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOTS = (
    ("reward_mean", "reward"),
    ("accuracy_mean", "accuracy"),
    ("completion_length_mean", "completion length (tokens)"),
    ("kl", "KL"),
    ("tokens_per_s", "rollout tokens/s"),
)
# SFT and KD stages have no rollouts: their panels are the loss and the optimizer's view.
SUPERVISED_PLOTS = (
    ("nll", "NLL per token"),
    ("kd_loss", "KD loss per token"),
    ("grad_norm", "grad norm"),
    ("lr", "lr"),
)


def load_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's step metrics (one dict per line of metrics.jsonl)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and last values of a run."""
    last = steps[-1] if steps else {}
    return {
        "steps": len(steps),
        "weight_version": last.get("weight_version", 0),
        "stage": last.get("stage", "rl"),
        **{f"{k}_last": last[k] for k in ("nll", "kd_loss") if k in last},
        **_param_counts(steps),
        "reward_mean_last": last.get("reward_mean", 0.0),
        "accuracy_mean_last": last.get("accuracy_mean", 0.0),
        "completion_tokens": sum(m.get("completion_tokens", 0) for m in steps),
        "train_seconds": sum(m.get("time_step_s", 0.0) for m in steps),
        "gpu_hours": last.get("gpu_hours", 0.0),
        "cpu_hours": last.get("cpu_hours", 0.0),
        "cost_dollars": last.get("cost_dollars", 0.0),
    }


def _param_counts(steps: list[dict[str, Any]]) -> dict[str, int]:
    """The learner's trainable and total parameters (LoRA: trainable < total), from the last step that trained."""
    last = next((m for m in reversed(steps) if "total_params" in m), {})
    return {k: int(last[k]) for k in ("trainable_params", "total_params") if k in last}


def plot(steps: list[dict[str, Any]], path: Path) -> Path:
    """Reward, accuracy, length, KL and rollout tokens/s (SFT/KD: loss, grad norm, lr) per step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    xs = [m["step"] for m in steps]
    rl = not steps or "reward_mean" in steps[0]
    panels = PLOTS if rl else tuple(p for p in SUPERVISED_PLOTS if p[0] in steps[0])
    series = {key: [m.get(key, 0.0) for m in steps] for key, _ in panels}
    if rl:
        series["tokens_per_s"] = [m["completion_tokens"] / max(m["time_generate_s"], 1e-9) for m in steps]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        ax.plot(xs, series[key], marker="o")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_summary(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """Write summary.json and training.png; returns the summary and the plot's path."""
    steps = load_metrics(run_dir)
    summary = summarize(steps)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary, plot(steps, run_dir / "training.png")


def render(summary: dict[str, Any]) -> Any:
    """A rich table of the summary."""
    from rich.table import Table

    table = Table(title="openrs_ray run summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table

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
# With beta = 0 no KL is computed (no reference model): the clipped share of tokens takes its panel, or, when
# nothing was clipped (one update per batch keeps the ratio at 1), the gradient norm.
NO_KL = (("clip_ratio", "clip ratio"), ("grad_norm", "grad norm"))
# SFT and KD stages have no rollouts: their panels are the loss and the optimizer's view.
SUPERVISED_PLOTS = (
    ("nll", "NLL per token"),
    ("kd_loss", "KD loss per token"),
    ("grad_norm", "grad norm"),
    ("lr", "lr"),
)
HELD_OUT = ("held_out", "held-out accuracy (eval)")
SMOOTHING = 0.6  # TensorBoard's default weight: the line follows the trend, the raw points stay visible


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


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled to 0."""
    out, ema = [], 0.0
    for i, v in enumerate(values, start=1):
        ema = weight * ema + (1 - weight) * v
        out.append(ema / (1 - weight**i))
    return out


def held_out(run_dir: Path, steps: list[dict[str, Any]]) -> dict[int, float]:
    """Held-out accuracy (average avg@k over the benchmarks) per evaluated step: eval/step-N.json (step 0, the
    starting point, is only there), else the eval/average/avg@k keys of metrics.jsonl."""
    points: dict[int, float] = {}
    for m in steps:
        key = next((k for k in m if k.startswith("eval/average/avg@") and not k.endswith("_stderr")), None)
        if key is not None and m[key] is not None:
            points[int(m["step"])] = float(m[key])
    for path in (run_dir / "eval").glob("step-*.json"):
        results = json.loads(path.read_text())
        value = results.get("average", {}).get(f"avg@{results.get('settings', {}).get('num_samples', 1)}")
        if value is not None and path.stem.split("-")[1].isdigit():
            points[int(path.stem.split("-")[1])] = float(value)
    return dict(sorted(points.items()))


def panels(steps: list[dict[str, Any]], evals: dict[int, float] | None = None) -> list[tuple[str, str]]:
    """(metric key, title) of each panel drawn: RL or supervised panels, KL only when a step has it (else the
    clip ratio), and the held-out accuracy when evaluation ran."""
    rl = not steps or "reward_mean" in steps[0]
    if rl:
        has = {k for m in steps for k in m}
        moving = [p for p in NO_KL if any(m.get(p[0]) for m in steps)]
        instead = (moving or [p for p in NO_KL if p[0] in has] or [("kl", "KL")])[0]
        chosen = [p if p[0] != "kl" or "kl" in has else instead for p in PLOTS]
        chosen = [p for p in chosen if p[0] in has or p[0] == "tokens_per_s" or not steps]
    else:
        chosen = [p for p in SUPERVISED_PLOTS if p[0] in steps[0]]
    return chosen + ([HELD_OUT] if evals else [])


def figure(steps: list[dict[str, Any]], evals: dict[int, float] | None = None) -> Any:
    """The matplotlib figure: per panel the raw points (faint) under their smoothed line; held-out evaluations
    as markers of their own."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    chosen = panels(steps, evals)
    xs = [m["step"] for m in steps]
    fig, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], chosen, strict=True):
        if key == HELD_OUT[0]:
            assert evals is not None
            ax.plot(list(evals), list(evals.values()), "D--", color="tab:red", label="held-out avg@k")
        else:
            if key == "tokens_per_s":
                ys = [m.get("completion_tokens", 0) / max(m.get("time_generate_s", 0.0), 1e-9) for m in steps]
            else:
                ys = [m.get(key, 0.0) for m in steps]
            ax.plot(xs, ys, "o", alpha=0.3, markersize=3, color="tab:blue", label="raw")
            ax.plot(xs, smooth(ys), "-", color="tab:blue", label="smoothed")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return fig


def plot(steps: list[dict[str, Any]], path: Path, evals: dict[int, float] | None = None) -> Path:
    """Reward, accuracy, length, KL (or clip ratio) and rollout tokens/s (SFT/KD: loss, grad norm, lr) per step,
    plus the held-out accuracy, as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(steps, evals)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_summary(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """Write summary.json and training.png; returns the summary and the plot's path."""
    steps = load_metrics(run_dir)
    summary = summarize(steps)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary, plot(steps, run_dir / "training.png", held_out(run_dir, steps))


def render(summary: dict[str, Any]) -> Any:
    """A rich table of the summary."""
    from rich.table import Table

    table = Table(title="openrs_ray run summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table

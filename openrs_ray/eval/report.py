"""An evaluation's results as files: NAME.json (everything, per-problem correctness included), NAME.md (the table),
and optionally NAME.samples.jsonl (every completion). Also the flat metrics a training run logs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Per-benchmark counters printed under the table when not zero (each one changes what the numbers mean).
_NOTES = {
    "too_long": "problems whose prompt does not fit the engine's context (scored wrong)",
    "unscored": "problems whose gold answer cannot be parsed (left out of the metrics)",
    "verify_timeouts": "samples the verifier did not score in time (scored wrong)",
    "verify_errors": "samples whose scoring raised (scored wrong)",
}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def metric_columns(results: dict[str, Any]) -> list[str]:
    """The metric keys of the table, in order: pass@1, avg@K, then unbiased pass@k."""
    k = results["settings"]["num_samples"]
    return ["pass@1", f"avg@{k}", *(f"pass@{j}" for j in results["settings"]["pass_k"])]


def _row(name: str, table: dict[str, Any], columns: list[str], k: int, problems: str, truncated: str) -> str:
    cells = []
    for col in columns:
        cell = _pct(table.get(col))
        if col == f"avg@{k}" and table.get(f"{col}_stderr") is not None:
            cell += f" ± {_pct(table[f'{col}_stderr'])}"
        cells.append(cell)
    return f"| {name} | {problems} | {' | '.join(cells)} | {truncated} |"


def render_markdown(results: dict[str, Any]) -> str:
    """A markdown table: one row per benchmark and their average, metrics in percent."""
    s, k = results["settings"], results["settings"]["num_samples"]
    step = "final" if results["step"] is None else f"step {results['step']}"
    columns = metric_columns(results)
    lines = [
        f"## Evaluation ({step}): {results['model']}",
        "",
        f"{k} sample(s) per problem, temperature {s['temperature']}, top_p {s['top_p']}, "
        f"max_new_tokens {s['max_new_tokens']}, seed {s['seed']}; metrics in %, avg@{k} ± its standard error.",
        "",
        f"| benchmark | problems | {' | '.join(columns)} | truncated |",
        f"|---|---:|{'---:|' * len(columns)}---:|",
    ]
    for name, b in results["benchmarks"].items():
        lines.append(_row(name, b, columns, k, str(b["problems"]), f"{_pct(b['truncated_ratio'])}%"))
    if len(results["benchmarks"]) > 1:
        lines.append(_row("**average**", results["average"], columns, k, "", ""))
    notes = [
        f"- {name}: {b[key]} {text}"
        for name, b in results["benchmarks"].items()
        for key, text in _NOTES.items()
        if b[key]
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    # A reader (or a crash) never sees half a file: write aside, then rename over.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(results: dict[str, Any], eval_dir: str | Path, name: str, samples: list[dict] | None = None) -> Path:
    """Write NAME.json and NAME.md (and NAME.samples.jsonl when samples are given) in eval_dir; returns the JSON."""
    eval_dir = Path(eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    json_path = eval_dir / f"{name}.json"
    _write_atomic(json_path, json.dumps(results, indent=1) + "\n")
    _write_atomic(eval_dir / f"{name}.md", render_markdown(results))
    if samples is not None:
        _write_atomic(eval_dir / f"{name}.samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    return json_path


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Scalars for metrics.jsonl: eval/NAME/METRIC per benchmark and eval/average/METRIC (None values left out)."""
    out: dict[str, float] = {}
    tables = {**results["benchmarks"], "average": results["average"]}
    keys = metric_columns(results) + [f"avg@{results['settings']['num_samples']}_stderr"]
    for name, table in tables.items():
        for key in keys:
            if table.get(key) is not None:
                out[f"eval/{name}/{key}"] = float(table[key])
    return out

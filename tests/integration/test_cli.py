"""`openrs-ray train` end to end through the CLI, and its handling of bad input."""

from __future__ import annotations

import json
from pathlib import Path

from openrs_ray.config import load_config
from tests.integration.conftest import run_cli
from tests.integration.output import MAX_WARNINGS, warning_lines

REQUIRED = {
    "step", "weight_version", "reward_mean", "accuracy_mean", "completion_tokens", "completion_length_mean",
    "time_generate_s", "time_verify_s", "time_learn_s", "time_broadcast_s", "time_step_s",
}  # fmt: skip


def test_smoke_run_writes_run_folder(smoke_overrides: list[str], out_dir: Path) -> None:
    proc, left = run_cli("train", "configs/smoke.yaml", *smoke_overrides, f"output_dir={out_dir}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not left, f"processes left behind: {left}"
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    assert [m["weight_version"] for m in lines] == [1, 2]
    for m in lines:
        assert REQUIRED <= m.keys(), REQUIRED - m.keys()
        assert m["completion_tokens"] > 0 and m["time_step_s"] > 0
        assert len(m["prompt_uids"]) == 2
    resolved = load_config(out_dir / "config.yaml")
    assert resolved.output_dir == str(out_dir) and resolved.max_steps == 2
    assert "train" in proc.stdout  # the rich progress bar
    summary = json.loads((out_dir / "summary.json").read_text())  # the end-of-run summary
    assert summary["steps"] == 2 and summary["cpu_hours"] > 0 and "cost_dollars" in summary
    assert (out_dir / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert all(m["cpu_hours"] > 0 for m in lines)
    noisy = warning_lines(proc.stdout + proc.stderr)  # vLLM's expected notices are filtered at the source
    assert len(noisy) <= MAX_WARNINGS, "\n".join(noisy)


def _expect_error(out_dir: Path, *args: str, key: str) -> None:
    proc, left = run_cli(*args, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    err_lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(err_lines) == 1 and key in err_lines[0], proc.stderr[-3000:]
    assert not left, f"processes left behind: {left}"


def test_missing_model_path(out_dir: Path) -> None:
    _expect_error(out_dir, "train", "configs/smoke.yaml", "model.path=/nonexistent/model", key="model.path")


def test_missing_data_file(smoke_overrides: list[str], out_dir: Path) -> None:
    args = ("train", "configs/smoke.yaml", *smoke_overrides, "data.path=/nonexistent/gsm8k.jsonl")
    _expect_error(out_dir, *args, key="data.path")


def test_invalid_values(smoke_overrides: list[str], out_dir: Path) -> None:
    base = ("train", "configs/smoke.yaml", *smoke_overrides)
    _expect_error(out_dir, *base, "learner.lr=-1", key="learner.lr")
    _expect_error(out_dir, *base, "generation.num_generations=1", key="generation.num_generations")
    _expect_error(out_dir, *base, "learner.lr=fast", key="learner.lr")
    _expect_error(out_dir, *base, "learner.lrr=1e-6", key="learner.lrr")
    _expect_error(out_dir, *base, "rewards.functions=[{name: acuracy}]", key="rewards")  # pre-flight, not the config


def test_malformed_yaml(tmp_path: Path, out_dir: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {path: x\nmax_steps: [")
    _expect_error(out_dir, "train", str(bad), key="malformed YAML")


def test_data_error_after_ray_started_cleans_up(smoke_overrides: list[str], tmp_path: Path, out_dir: Path) -> None:
    """A data file without a usable column fails once Ray is up: clear error, and Ray is stopped."""
    data = tmp_path / "no_question.jsonl"
    data.write_text(json.dumps({"text": "2+2", "answer": "4"}) + "\n")
    args = ("train", "configs/smoke.yaml", *smoke_overrides, f"data.path={data}", f"output_dir={out_dir}")
    _expect_error(out_dir, *args, key="data.prompt_key")


def test_actor_failure_exits_nonzero_and_cleans_up(tmp_path: Path, out_dir: Path) -> None:
    """A model folder that exists but cannot load fails inside the actors: the run stops, nothing is left."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    proc, left = run_cli("train", "configs/smoke.yaml", f"model.path={broken}", f"output_dir={out_dir}")
    assert proc.returncode != 0
    assert not left, f"processes left behind: {left}"

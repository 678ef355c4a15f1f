"""Cost accounting and the end-of-run summary, with hand-computed numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrs_ray.config import load_config
from openrs_ray.ops.cost import CostMeter
from openrs_ray.records.summary import summarize, write_summary
from tests.conftest import REPO


def test_open_rs_shape_costs_42_dollars() -> None:
    # Open-RS: 4 x A40 for 24 h at $0.4375/h = $42. Here 2 engines + 2 learners on GPUs.
    cfg = load_config(
        REPO / "configs/smoke.yaml",
        ["cluster.use_gpu=true", "learner.num_learners=2", "cost.gpu_hour_usd=0.4375", "cost.cpu_node_hour_usd=0.64",
         "cost.cpu_node_cpus=32", "cluster.verifier_cpus=4", "rewards.num_workers=2"],
    )  # fmt: skip
    meter = CostMeter(cfg)
    start = meter._last
    meter.tick(num_engines=2, now=start + 12 * 3600)
    meter.tick(num_engines=2, now=start + 24 * 3600)
    assert meter.gpu_hours == {"generator": 48.0, "learner": 48.0, "verifier": 0.0}
    # CPUs: generators 2 x 1, learners 2 x 1, verifiers 2 x 4 = 12 CPUs x 24 h = 288 CPU-hours = 9 node-hours.
    assert sum(meter.cpu_hours.values()) == pytest.approx(288.0)
    assert meter.dollars == pytest.approx(96 * 0.4375 + 9 * 0.64)


def test_engine_count_changes_are_integrated() -> None:
    cfg = load_config(REPO / "configs/smoke.yaml", ["cluster.use_gpu=true", "cost.gpu_hour_usd=1.0"])
    meter = CostMeter(cfg)
    start = meter._last
    meter.tick(num_engines=1, now=start + 3600)  # one engine for the first hour
    meter.tick(num_engines=3, now=start + 7200)  # three for the second
    assert meter.gpu_hours["generator"] == pytest.approx(4.0)
    assert meter.summary()["gpu_hours"] == pytest.approx(4.0 + 2.0)  # plus one learner for 2 h


def test_summary_and_plot(tmp_path: Path) -> None:
    steps = [
        {"step": s, "weight_version": s, "reward_mean": 0.1 * s, "accuracy_mean": 0.2 * s, "kl": 0.01,
         "completion_length_mean": 30.0, "completion_tokens": 100, "time_generate_s": 0.5, "time_step_s": 2.0,
         "gpu_hours": 0.5 * s, "cpu_hours": 1.0, "cost_dollars": 0.25 * s}
        for s in (1, 2, 3)
    ]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in steps))
    summary, png = write_summary(tmp_path)
    assert summary == summarize(steps) == json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["completion_tokens"] == 300 and summary["train_seconds"] == 6.0
    assert summary["cost_dollars"] == 0.75 and summary["gpu_hours"] == 1.5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

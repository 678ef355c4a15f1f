"""Experiment trackers (`metrics.report_to`: tensorboard, wandb, mlflow): every metrics.jsonl line goes to each.

The trackers' own clients do the work (torch's SummaryWriter, wandb, mlflow); this module only opens a run
named after the output_dir, hands each step's metrics to every client, and closes them. They are optional
installs (`pip install '.[track]'`): a tracker that is named but not installed is one ConfigError line,
raised when the run folder is created, before Ray starts.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from numbers import Number
from pathlib import Path
from typing import Any

from openrs_ray.config import ConfigError, RunConfig

# The module each tracker needs (tensorboard's writer is torch's, which needs the tensorboard package).
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested values (e.g. staleness_hist: {"0": 256}) as their own keys (staleness_hist/0)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = v
    return out


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics line (nested ones flattened), less `step` (every tracker's x axis)."""
    return {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, Number) and k != "step"}


class TensorBoardTracker:
    """Event files in OUTPUT_DIR/tensorboard: numbers as scalars, text values (e.g. stage) as text."""

    def __init__(self, cfg: RunConfig, run_dir: Path, name: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.texts: dict[str, str] = {}

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for key, value in _scalars(metrics).items():
            self.writer.add_scalar(key, value, step)
        for key, value in metrics.items():
            if isinstance(value, str) and self.texts.get(key) != value:  # only when it changes: no flood
                self.texts[key] = value
                self.writer.add_text(key, value, step)
        self.writer.flush()  # a crash loses nothing, as with metrics.jsonl

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run (project WANDB_PROJECT, default openrs_ray) whose config is the resolved run config."""

    def __init__(self, cfg: RunConfig, run_dir: Path, name: str) -> None:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "openrs_ray"),
            name=name,
            dir=str(run_dir),
            config=cfg.model_dump(mode="json"),
            reinit="create_new",  # each pipeline stage is a run of its own
        )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in flatten(metrics).items() if k != "step"}, step=step)

    def close(self) -> None:
        self.run.finish()


def mlflow_key(key: str) -> str:
    """MLflow's name for a metric: eval/x/avg@8 becomes eval.x.avg_at_8. It allows only alphanumerics and
    _ - . space : /, and its file store turns / into folders, where gpu_hours and gpu_hours/generator collide."""
    return re.sub(r"[^\w\-. :]", "_", key.replace("@", "_at_").replace("/", "."))


class MlflowTracker:
    """An MLflow run in MLFLOW_TRACKING_URI, else in a file store in OUTPUT_DIR/mlruns (no server needed)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, name: str) -> None:
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # MLflow 3 refuses its file store unless told; without a server it is the one that needs nothing.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "openrs_ray")
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
        self.uri = uri
        self.texts: dict[str, str] = {}

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), v, now, step) for k, v in _scalars(metrics).items()]
        self.client.log_batch(self.run_id, metrics=batch)
        for key, value in metrics.items():
            if isinstance(value, str) and self.texts.get(key) != value:
                self.texts[key] = value
                self.client.set_tag(self.run_id, mlflow_key(key), value)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


def open_trackers(cfg: RunConfig, run_dir: Path) -> list[Any]:
    """One open tracker per name in metrics.report_to (a missing package: one ConfigError line)."""
    missing = [n for n in cfg.metrics.report_to if importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        raise ConfigError(
            f"metrics.report_to: {', '.join(missing)} not installed (pip install '.[track]', or pip install "
            f"{' '.join(PACKAGES[n] for n in missing)})"
        )
    name = cfg.metrics.run_name or Path(cfg.output_dir).name
    opened: list[Any] = []
    for n in dict.fromkeys(cfg.metrics.report_to):
        try:
            opened.append(TRACKERS[n](cfg, run_dir, name))
        except Exception as err:  # e.g. W&B online without a login: one line, the others closed again
            for tracker in opened:
                tracker.close()
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(f"metrics.report_to: {n} could not start: {reason}") from None
    return opened

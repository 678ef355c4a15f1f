"""The run folder: resolved config.yaml, run.json (provenance) and one metrics.jsonl line per step."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from openrs_ray.config import RunConfig, dump_config
from openrs_ray.records.provenance import write_run_json
from openrs_ray.records.tracking import open_trackers
from openrs_ray.step_record import RolloutStats, StepRecord
from openrs_ray.types import ScoredGroup


class RunFolder:
    """Creates output_dir with run.json (provenance), appends step metrics to metrics.jsonl and hands each
    step to the trackers of metrics.report_to."""

    def __init__(self, cfg: RunConfig, overwrite: bool = False, resume_step: int | None = None) -> None:
        self.path = Path(cfg.output_dir)
        self.metrics_path = self.path / "metrics.jsonl"
        if resume_step is not None:  # keep the steps the checkpoint covers; later lines are re-run
            lines = self.metrics_path.read_text().splitlines() if self.metrics_path.exists() else []
            kept = [line for line in lines if json.loads(line)["step"] <= resume_step]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        else:
            if self.metrics_path.exists() and not overwrite:
                raise FileExistsError(
                    f"output_dir {self.path} already holds a run (metrics.jsonl); choose another output_dir "
                    "or pass --overwrite"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.path / "config.yaml")
            self.metrics_path.write_text("")
        write_run_json(cfg, self.path, resume_step)
        self.trackers = open_trackers(cfg, self.path)

    def steps(self) -> set[int]:
        """The steps metrics.jsonl holds a line for."""
        return {json.loads(line)["step"] for line in self.metrics_path.read_text().splitlines() if line}

    def log(self, record: StepRecord | dict[str, Any]) -> None:
        """Append one step's metrics as a JSON line (flushed at once, so a crash loses nothing); send it on."""
        metrics = record.to_dict() if isinstance(record, StepRecord) else record
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        for tracker in list(self.trackers):
            try:
                tracker.log(int(metrics.get("step", 0)), metrics)
            except Exception as err:  # a tracker is a copy: metrics.jsonl has it all, so the run goes on
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                print(f"openrs-ray: warning: {type(tracker).__name__} stopped logging: {reason}", file=sys.stderr)
                self.trackers.remove(tracker)

    def close(self) -> None:
        """Finish the trackers' runs (W&B uploads or syncs what it holds, TensorBoard closes its file)."""
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def rollout_metrics(groups: list[ScoredGroup]) -> dict[str, Any]:
    """Reward, accuracy and length statistics of the groups trained on in one step, as metrics.jsonl keys."""
    return RolloutStats.of(groups).to_dict()

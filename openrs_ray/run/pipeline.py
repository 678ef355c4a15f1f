"""`openrs-ray pipeline CONFIG`: stages chained (sft → rl, kd → rl, sft + kd → rl), each resumable.

    output_dir: runs/srlm-0.5b-sft-rl
    stages:
      - name: sft
        config: srlm-0.5b-sft.yaml       # relative to this file
        overrides: {max_steps: 100}      # dotted keys over the stage's config
      - name: rl
        config: srlm-0.5b-rl.yaml        # model.path := the previous stage's final checkpoint

Stage i runs in OUTPUT_DIR/<name>/ and starts from stage i-1's final checkpoint (its HF folder). A stage
with DONE.json is skipped; one with a checkpoint resumes from it; one without starts over. So re-running
the same command after any interruption continues where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from openrs_ray.config import (
    ConfigError,
    RunConfig,
    _describe,
    apply_overrides,
    parse_config,
    read_yaml,
)
from openrs_ray.config.sections import _Section
from openrs_ray.demo.prepare import PrepareConfig, prepare

DONE = "DONE.json"


class StageSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    """Stage name: its folder under output_dir, and the prefix of its command-line overrides."""
    config: str | None = None
    """The stage's run config (YAML), relative to the pipeline file; None: `settings` is the whole config."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Nested config sections merged over `config` (or the whole config, inline)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Dotted keys set over the stage's config, e.g. {max_steps: 100, learner.lr: 1e-5}."""


class PipelineConfig(_Section):
    output_dir: str
    """Folder of the whole pipeline; each stage writes OUTPUT_DIR/<stage name>/. The text {output_dir} in
    any stage setting is replaced by it (e.g. model.path: "{output_dir}/tiny-model")."""
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    """What to build before the first stage (a tiny model, synthetic data), inside output_dir."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    """Nested config sections every stage starts from (its config file and settings override them)."""
    stages: list[StageSpec] = Field(min_length=1)
    """Stages in order; each starts from the previous one's final checkpoint."""

    @field_validator("stages")
    @classmethod
    def _unique(cls, stages: list[StageSpec]) -> list[StageSpec]:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return stages


def final_model(stage_dir: Path, cfg: RunConfig) -> Path:
    """Where a stage's final model lands: its last step's checkpoint (HF folder)."""
    return stage_dir / "checkpoints" / f"step-{cfg.max_steps}" / "policy"


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> tuple[PipelineConfig, list[RunConfig]]:
    """The pipeline and every stage's resolved RunConfig (output_dir and chained model.path filled in).

    Command-line overrides: `output_dir=...`, `<stage>.<key>=value` for one stage, `all.<key>=value` for all.
    """
    path = Path(path)
    tree = read_yaml(path)
    top = [o for o in overrides or [] if o.startswith(("output_dir=", "prepare."))]
    try:
        pipe = PipelineConfig.model_validate(apply_overrides(tree, top))
    except ValidationError as err:
        raise ConfigError(f"{path}: {_describe(err)}") from None
    names = {s.name for s in pipe.stages}
    for o in overrides or []:
        head = o.split(".", 1)[0]
        if o not in top and head not in names | {"all"}:
            raise ConfigError(
                f"override {o!r}: start with a stage name ({sorted(names)}), all., prepare. or output_dir="
            )
    configs: list[RunConfig] = []
    for spec in pipe.stages:
        stage_tree = _merge(pipe.defaults, read_yaml(path.parent / spec.config) if spec.config else {})
        stage_tree = _merge(stage_tree, spec.settings)
        stage_tree = apply_overrides(stage_tree, [f"{k}={_yaml(v)}" for k, v in spec.overrides.items()])
        mine = [o.split(".", 1)[1] for o in overrides or [] if o.split(".", 1)[0] in (spec.name, "all") and "." in o]
        stage_tree = apply_overrides(stage_tree, mine)
        stage_tree = _substitute(stage_tree, pipe.output_dir)
        stage_tree["output_dir"] = str(Path(pipe.output_dir) / spec.name)
        if configs:  # chained: starts from the previous stage's final model
            stage_tree.setdefault("model", {})["path"] = str(final_model(Path(configs[-1].output_dir), configs[-1]))
        try:
            configs.append(parse_config(stage_tree))
        except ConfigError as err:
            raise ConfigError(f"stage {spec.name} ({spec.config or 'inline'}): {err}") from None
    return pipe, configs


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Nested mappings merged key by key (`over` wins); other values replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _substitute(tree: Any, output_dir: str) -> Any:
    """Replace {output_dir} in every string of a config tree."""
    if isinstance(tree, dict):
        return {k: _substitute(v, output_dir) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_substitute(v, output_dir) for v in tree]
    return tree.replace("{output_dir}", output_dir) if isinstance(tree, str) else tree


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def run_pipeline(path: str | Path, overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """Run (or continue) every stage in order; returns each stage's {name, stage, model, folder}."""
    from openrs_ray.records.checkpoint import latest_checkpoint
    from openrs_ray.run.preflight import check_names, preflight
    from openrs_ray.run.runner import run_stage

    pipe, configs = load_pipeline(path, overrides)
    for cfg in configs:  # names first: a typo fails before `prepare` writes anything
        check_names(cfg)
    for line in prepare(pipe.prepare, pipe.output_dir):
        print(f"pipeline: {line}")
    for cfg in configs:  # fail fast, except on models an earlier stage of this pipeline will write
        # User rewards import now; their probe call waits for data an earlier stage will write.
        data_later = cfg.data is not None and Path(cfg.data.path).resolve().is_relative_to(
            Path(pipe.output_dir).resolve()
        )
        preflight(cfg, skip_under=pipe.output_dir, probe=not data_later)
    done: list[dict[str, Any]] = []
    for spec, cfg in zip(pipe.stages, configs, strict=True):
        folder = Path(cfg.output_dir)
        marker = folder / DONE
        if marker.is_file():
            print(f"pipeline: stage {spec.name} already done, skipped")
            done.append(json.loads(marker.read_text()))
            continue
        resume = latest_checkpoint(folder) is not None
        print(f"pipeline: stage {spec.name} ({cfg.stage}) {'resumed' if resume else 'started'} in {folder}")
        model = run_stage(cfg, resume=resume, overwrite=not resume)
        record = {"name": spec.name, "stage": cfg.stage, "model": str(model), "folder": str(folder)}
        tmp = folder / f"{DONE}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, marker)
        done.append(record)
    for record in done:
        record["evaluation"] = evaluation_progress(Path(record["folder"]))
    (Path(pipe.output_dir) / "pipeline.json").write_text(json.dumps(done, indent=2))
    for record in done:
        if record["evaluation"]:
            print(describe_progress(record["name"], record["evaluation"]))
    return done


def evaluation_progress(folder: Path) -> dict[str, Any] | None:
    """A stage's first and last evaluation and its best (from eval/best.json), or None when it had none."""
    path = folder / "eval" / "best.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    history = sorted(record["history"], key=lambda h: h["step"])
    first, last = history[0], history[-1]
    return {"metric": record["key"], "first": first, "last": last, "best": record["best"],
            "gain_points": 100 * (last["score"] - first["score"])}  # fmt: skip


def describe_progress(name: str, ev: dict[str, Any]) -> str:
    """One line: the stage's evaluation score before its first update and after its last."""
    f, last = ev["first"], ev["last"]
    return (
        f"stage {name}: evaluation {ev['metric']} {100 * f['score']:.1f}% at step {f['step']} -> "
        f"{100 * last['score']:.1f}% at step {last['step']} ({ev['gain_points']:+.1f} points; "
        f"best at step {ev['best']['step']})"
    )

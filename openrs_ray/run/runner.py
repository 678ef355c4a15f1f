"""Running one stage (rl, sft, kd_seq, kd_token) end to end: what `train` and each `pipeline` stage do.

The stage's driver (Orchestrator for rl, SupervisedTrainer otherwise) steps to max_steps, writing
metrics.jsonl, checkpointing every save_steps and at the end, and evaluating every eval.eval_steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openrs_ray.config import ConfigError, RunConfig
from openrs_ray.step_record import StepRecord


def _progress(enabled: bool, label: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"), disable=not enabled,
    )  # fmt: skip


def _info(m: StepRecord) -> str:
    """The progress bar's one-line summary of a step."""
    if m.rollout is not None:
        return f"reward {m.rollout.reward_mean:.3f} acc {m.rollout.accuracy_mean:.3f} {m.phases['step']:.1f}s"
    loss = next((f"{k} {m.learner[k]:.4f}" for k in ("nll", "kd_loss") if k in m.learner), "")
    return f"{loss} {m.phases['step']:.1f}s"


def make_driver(cfg: RunConfig) -> Any:
    """The stage's driver: the GRPO Orchestrator, or the SupervisedTrainer for sft / kd_seq / kd_token."""
    if cfg.stage == "rl":
        from openrs_ray.stages.orchestrator import Orchestrator

        return Orchestrator(cfg)
    from openrs_ray.stages.supervised import SupervisedTrainer

    return SupervisedTrainer(cfg)


def run_stage(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Train one stage; returns its final checkpoint's HF model folder (what a next stage starts from).

    resume=True continues from the newest complete checkpoint in output_dir. With checkpoint.auto_resume a
    role lost for good (RoleLost: a learner's node) is survived the same way, a bounded number of times.
    """
    from openrs_ray.cluster import check_resources, ray_cluster
    from openrs_ray.errors import RoleLost
    from openrs_ray.records.checkpoint import latest_checkpoint
    from openrs_ray.recovery import RetryBudget
    from openrs_ray.run.preflight import check_names

    check_names(cfg)  # also for callers that skipped the CLI's pre-flight (milliseconds)
    ckpt = latest_checkpoint(cfg.output_dir) if resume else None
    if resume and ckpt is None:
        raise ConfigError(f"--resume: no complete checkpoint in {cfg.output_dir}/checkpoints")
    budget = RetryBudget(cfg.checkpoint.auto_resume_retries if cfg.checkpoint.auto_resume else 0)
    with ray_cluster(cfg.cluster, cfg.model):
        if cfg.cluster.preflight:  # too few GPUs/CPUs: one line in seconds, not a silent wait
            check_resources(cfg)
        while True:
            try:
                final, run_path = _attempt(cfg, ckpt, overwrite)
                break
            except RoleLost as err:
                ckpt = latest_checkpoint(cfg.output_dir)
                line = budget.take(f"{err}; rebuilding from {ckpt}") if ckpt is not None else None
                if line is None:
                    raise
                print(f"openrs-ray: {line}", flush=True)
                # Wait for room again (the lost node, or another); one line naming the shortage if it never comes.
                check_resources(cfg, wait_s=cfg.checkpoint.auto_resume_wait_s)
    from rich.console import Console

    from openrs_ray.records.summary import render, write_summary

    summary, png = write_summary(run_path)
    Console().print(render(summary))
    print(f"run folder: {run_path} (metrics.jsonl, summary.json, {png.name})")
    return final / "policy"


def _attempt(cfg: RunConfig, ckpt: Path | None, overwrite: bool) -> tuple[Path, Path]:
    """Start every role (from `ckpt` when given) and train to max_steps; returns (final checkpoint, run folder)."""
    from openrs_ray.records.runlog import RunFolder

    step0 = int(ckpt.name.split("-")[1]) if ckpt else None
    run = RunFolder(cfg, overwrite=overwrite, resume_step=step0)
    driver = make_driver(cfg)
    try:
        driver.setup(resume=ckpt)
        if ckpt:
            print(f"resumed from {ckpt} (step {driver.step_idx})")
        hook = _eval_hook(cfg, run.path, driver.tokenizer)
        if ckpt and driver.step_idx not in run.steps():
            _restore_line(ckpt, driver, run, hook)
        return _loop(cfg, driver, run, hook), run.path
    finally:
        driver.shutdown()
        run.close()


def _eval_hook(cfg: RunConfig, run_path: Path, tokenizer: Any) -> Any:
    """Evaluation every eval.eval_steps (None when not configured)."""
    if not (cfg.eval.eval_steps and cfg.eval.benchmarks):
        return None
    from openrs_ray.eval.runner import EvalHook

    return EvalHook(cfg, run_path, tokenizer)


def _restore_line(ckpt: Path, driver: Any, run: Any, hook: Any) -> None:
    """Write the checkpointed step's metrics line that the killed run never wrote (it died between the save and
    the write, or during that step's evaluation, which is then run again on the restored weights)."""
    from openrs_ray.eval.report import flat_metrics
    from openrs_ray.records.checkpoint import saved_line

    line, step = saved_line(ckpt), driver.step_idx
    if line is None:  # a checkpoint from before lines were saved with it: say so rather than invent one
        print(f"openrs-ray: warning: metrics.jsonl has no line for step {step} and {ckpt} carries none")
        return
    if hook is not None and hook.due(step) and not any(key.startswith("eval/") for key in line):
        results = hook.run(step, *driver.eval_targets(), checkpoint=str(ckpt / "policy"))
        line |= flat_metrics(results)
    run.log(line)


def _loop(cfg: RunConfig, driver: Any, run: Any, hook: Any) -> Path:
    """Step to max_steps; checkpoint every save_steps, at every evaluation, and at the end."""
    from openrs_ray.eval.report import flat_metrics

    saved: Path | None = None
    with _progress(cfg.metrics.progress_bar, f"train {cfg.stage}") as bar:
        if hook is not None and driver.step_idx == 0:  # the starting point, before any update
            hook.run(0, *driver.eval_targets(), progress=bar)
        task = bar.add_task(cfg.stage, total=cfg.max_steps, completed=driver.step_idx, info="")
        placement = driver.placement()  # where each role landed: recorded once, with the first step
        while driver.step_idx < cfg.max_steps:
            m = driver.step()
            if placement is not None:
                m.placement, placement = placement, None
            step = driver.step_idx
            evaluate = hook is not None and hook.due(step)
            if (cfg.checkpoint.save_steps and step % cfg.checkpoint.save_steps == 0) or evaluate:
                saved = driver.save(line=m.to_dict())
            if evaluate:  # a checkpoint exists for every evaluated step, so the best one can be kept
                results = hook.run(step, *driver.eval_targets(), checkpoint=str(saved / "policy"), progress=bar)
                m.evaluation.update(flat_metrics(results))
            run.log(m)
            bar.update(task, advance=1, info=_info(m))
    if saved is None or int(saved.name.split("-")[1]) != driver.step_idx:
        from openrs_ray.records.checkpoint import checkpoint_dir, latest_checkpoint

        done = latest_checkpoint(cfg.output_dir)
        saved = done if done is not None and done == checkpoint_dir(cfg.output_dir, driver.step_idx) else driver.save()
    return saved

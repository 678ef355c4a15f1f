"""`openrs-ray`: train | make-tiny-model. Heavy imports (ray, torch, vllm) happen only inside commands."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"), disable=not enabled,
    )  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    """Load and check the config, then run the orchestrator on Ray, writing the run folder."""
    from openrs_ray.config import ConfigError, check_paths, load_config

    overrides = args.overrides + ([f"output_dir={args.resume}"] if args.resume else [])
    cfg = load_config(args.config, overrides)
    check_paths(cfg)  # before any actor starts
    from openrs_ray.checkpoint import latest_checkpoint
    from openrs_ray.cluster import ray_cluster
    from openrs_ray.orchestrator import Orchestrator
    from openrs_ray.runlog import RunFolder

    ckpt = latest_checkpoint(args.resume) if args.resume else None
    if args.resume and ckpt is None:
        raise ConfigError(f"--resume: no complete checkpoint in {args.resume}/checkpoints")
    step0 = int(ckpt.name.split("-")[1]) if ckpt else None
    run = RunFolder(cfg, overwrite=args.overwrite, resume_step=step0)
    with ray_cluster(cfg.cluster):
        orch = Orchestrator(cfg)
        try:
            orch.setup(resume=ckpt)
            if ckpt:
                print(f"resumed from {ckpt} (step {orch.step_idx})")
            with _progress(cfg.metrics.progress_bar) as bar:
                task = bar.add_task("train", total=cfg.max_steps, completed=orch.step_idx, info="")
                while orch.step_idx < cfg.max_steps:
                    m = orch.step()
                    run.log(m)
                    if cfg.checkpoint.save_steps and orch.step_idx % cfg.checkpoint.save_steps == 0:
                        orch.save()
                    info = f"reward {m['reward_mean']:.3f} acc {m['accuracy_mean']:.3f} {m['time_step_s']:.1f}s"
                    bar.update(task, advance=1, info=info)
        finally:
            orch.shutdown()
    from rich.console import Console

    from openrs_ray.summary import render, write_summary

    summary, png = write_summary(run.path)
    Console().print(render(summary))
    print(f"run folder: {run.path} (metrics.jsonl, summary.json, {png.name})")
    return 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    """Write a tiny Qwen2-shaped model and BPE tokenizer to a folder."""
    from openrs_ray.models.tiny import make_tiny_model

    path = make_tiny_model(args.dir, num_layers=args.layers, hidden_size=args.hidden_size, seed=args.seed)
    print(f"tiny model written to {path}")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    """Change the number of generator engines of a running job."""
    import ray

    from openrs_ray.control import scale_generators

    ray.init(address=args.address, log_to_driver=False)
    try:
        n = scale_generators(args.run, args.generators)
    except ValueError as err:
        print(f"openrs-ray: error: {err}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    print(f"{args.run}: {n} generator engines requested (applied at the start of the next step)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openrs-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="GRPO training run")
    train.add_argument("config", help="YAML config file")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-6")
    train.add_argument("--overwrite", action="store_true", help="reuse an output_dir that holds a run")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    train.set_defaults(func=cmd_train)
    scale = sub.add_parser("scale", help="change the generator engine count of a running job")
    scale.add_argument("--generators", type=int, required=True, help="engines wanted (>= 1)")
    scale.add_argument("--run", required=True, help="the job's output_dir name, e.g. smoke for runs/smoke")
    scale.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    scale.set_defaults(func=cmd_scale)
    tiny = sub.add_parser("make-tiny-model", help="write a tiny Qwen2 model + tokenizer for tests/demos")
    tiny.add_argument("dir")
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument("--hidden-size", type=int, default=128)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_make_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; configuration and data problems exit 2 with one line naming the key."""
    from openrs_ray.config import ConfigError
    from openrs_ray.data.sources import DataError
    from openrs_ray.errors import NonFiniteLoss

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileExistsError) as err:
        print(f"openrs-ray: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLoss as err:
        print(f"openrs-ray: stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

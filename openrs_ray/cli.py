"""`openrs-ray`: train | pipeline | eval | scale | make-tiny-model.

Heavy imports (ray, torch, vllm) happen only inside commands."""

from __future__ import annotations

import argparse
import sys


def cmd_train(args: argparse.Namespace) -> int:
    """Load and check the config, then run the stage (rl, sft, kd_seq, kd_token) on Ray."""
    from openrs_ray.config import load_config
    from openrs_ray.run.preflight import preflight
    from openrs_ray.run.runner import run_stage

    overrides = args.overrides + ([f"output_dir={args.resume}"] if args.resume else [])
    cfg = load_config(args.config, overrides)
    preflight(cfg)  # names, paths, user extensions, hub ids: one line in seconds, before Ray starts
    model = run_stage(cfg, resume=bool(args.resume), overwrite=args.overwrite)
    print(f"final model: {model}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    """Run or continue a chain of stages, each from the previous one's final checkpoint."""
    from openrs_ray.run.pipeline import run_pipeline

    for record in run_pipeline(args.config, args.overrides):
        print(f"{record['name']} ({record['stage']}): {record['model']}")
    return 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    """Write a tiny Qwen2-shaped model and BPE tokenizer to a folder."""
    from openrs_ray.demo.tiny import make_tiny_model

    path = make_tiny_model(args.dir, num_layers=args.layers, hidden_size=args.hidden_size, seed=args.seed)
    print(f"tiny model written to {path}")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    """Change the number of generator engines of a running job."""
    import ray

    from openrs_ray.ops.control import scale_generators

    auto = args.generators == "auto"
    if not auto and not (args.generators.isdigit() and int(args.generators) >= 1):
        print(f"openrs-ray: error: --generators: expected an engine count >= 1 or 'auto', got {args.generators!r}",
              file=sys.stderr)  # fmt: skip
        return 2
    ray.init(address=args.address, log_to_driver=False)
    try:
        n = scale_generators(args.run, None if auto else int(args.generators))
    except ValueError as err:
        print(f"openrs-ray: error: {err}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    asked = "engine count handed back to generation.autoscale" if auto else f"{n} generator engines requested"
    print(f"{args.run}: {asked} (applied at the start of the next step)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openrs-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="one training stage: rl (GRPO), sft, kd_seq or kd_token")
    train.add_argument("config", help="YAML config file")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-6")
    train.add_argument("--overwrite", action="store_true", help="reuse an output_dir that holds a run")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    train.set_defaults(func=cmd_train)
    pipe = sub.add_parser("pipeline", help="stages chained (sft/kd → rl), each resumable")
    pipe.add_argument("config", help="pipeline YAML (output_dir + stages)")
    pipe.add_argument("overrides", nargs="*", help="<stage>.<key>=value, all.<key>=value or output_dir=...")
    pipe.set_defaults(func=cmd_pipeline)
    from openrs_ray.eval.cli import add_eval_parser  # `eval` lives with the evaluation harness

    add_eval_parser(sub)
    scale = sub.add_parser("scale", help="change the generator engine count of a running job")
    scale.add_argument("--generators", required=True, help="engines wanted (>= 1), or 'auto': generation.autoscale")
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
    from openrs_ray.errors import NonFiniteLoss, RoleLost

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileExistsError) as err:
        print(f"openrs-ray: error: {err}", file=sys.stderr)
        return 2
    except (NonFiniteLoss, RoleLost) as err:
        print(f"openrs-ray: stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

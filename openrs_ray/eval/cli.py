"""`openrs-ray eval CONFIG [overrides...]`: evaluate model.path on eval.benchmarks, on actors of its own."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openrs_ray.config import RunConfig


def add_eval_parser(subparsers: Any) -> None:
    """Register the `eval` command on the CLI's subparsers."""
    ev = subparsers.add_parser("eval", help="evaluate a model: pass@1, avg@k, pass@k per benchmark")
    ev.add_argument("config", help="YAML config file (model.path is the model evaluated; eval.* the benchmarks)")
    ev.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.benchmarks=[math500] eval.preset=avg_k")
    ev.set_defaults(func=cmd_eval)


def _max_positions(cfg: RunConfig) -> int | None:
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    return getattr(hf.get_text_config(), "max_position_embeddings", None)


def standalone_config(cfg: RunConfig, longest_prompt: int, max_positions: int | None) -> RunConfig:
    """The config the evaluation's own engines and verifiers start with.

    Engines get a context that fits the longest prompt plus eval.max_new_tokens (or generation.* when larger),
    within the model's positions, and wait eval.timeout_s for a call; verifiers compute only accuracy.
    """
    from openrs_ray.config import RewardSpec

    out = cfg.model_copy(deep=True)
    gen, ec = out.generation, cfg.eval
    # vLLM holds max_model_len = prompt + completion tokens per request; the config's own sizing is kept if larger.
    context = max(gen.max_prompt_length, longest_prompt) + max(gen.max_completion_length, ec.max_new_tokens)
    if max_positions is not None:
        context = min(context, max_positions)
    gen.max_prompt_length = max(1, min(max(gen.max_prompt_length, longest_prompt), context - 1))
    gen.max_completion_length = max(1, context - gen.max_prompt_length)
    gen.timeout_s = max(gen.timeout_s, ec.timeout_s)
    out.rewards.functions = [RewardSpec(name="accuracy")]
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    """Load the config, read the benchmarks, start Ray, engines and verifiers, evaluate, print the table."""
    from openrs_ray.config import check_hub, check_paths, load_config
    from openrs_ray.eval.benchmarks import check_benchmark_names, load_benchmarks

    cfg = load_config(args.config, args.overrides)
    check_benchmark_names(cfg.eval.benchmarks)  # pre-flight (the config does not import eval/)
    check_paths(cfg, need_data=False)  # before any actor starts
    check_hub(cfg)
    benchmarks = load_benchmarks(cfg.eval)  # a missing file or unreachable hub fails here too
    from transformers import AutoTokenizer

    from openrs_ray.eval.report import render_markdown
    from openrs_ray.eval.runner import Evaluator

    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    evaluator = Evaluator(cfg, tokenizer, benchmarks=benchmarks)
    engine_cfg = standalone_config(cfg, evaluator.longest_prompt, _max_positions(cfg))
    results = _run_on_ray(engine_cfg, evaluator)
    print(render_markdown(results), flush=True)
    print(f"results: {results['path']} (and {results['path'][: -len('.json')]}.md)")
    return 0


def _run_on_ray(cfg: RunConfig, evaluator: Any) -> dict[str, Any]:
    """Start the actors on Ray, evaluate, and stop everything again, also on error."""
    from openrs_ray.cluster import ray_cluster
    from openrs_ray.generators.group import GeneratorGroup
    from openrs_ray.rewards.pool import VerifierPool

    with ray_cluster(cfg.cluster):
        started: list[Any] = []
        try:
            generators = GeneratorGroup(cfg)
            started.append(generators)
            verifiers = VerifierPool(cfg)
            started.append(verifiers)
            generators.wait_ready()
            return evaluator.run(generators, verifiers)
        finally:
            for component in reversed(started):
                component.shutdown()

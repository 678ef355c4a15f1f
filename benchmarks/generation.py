"""Rollout throughput of the GeneratorGroup (vLLM engines as Ray actors) with 1 and 2 engines, tiny model, CPU.

    python benchmarks/generation.py [--engines 1 2] [--batches 5] [--prompts 16] [--generations 8]
                                    [--max-tokens 128] [--out benchmarks/results/generation.json]

A tiny Qwen2 (openrs_ray.demo.tiny.make_tiny_model, defaults) is written to a temp dir. For each engine
count, a real GeneratorGroup is built from configs/smoke.yaml (generation.num_engines=N,
num_generations, max_completion_length) and waited on (start time is reported apart); prompts come from
PromptSource over configs/data/gsm8k_mini.jsonl. One warm-up batch, then `--batches` timed
`generate(prompts)` calls of `--prompts` prompts each. tokens/s = completion tokens / seconds; prompts/s
and rollouts/s likewise. Each engine actor asks Ray for 1 CPU (cluster.generator_cpus); Ray gets num_cpus=4,
but the machine's real core count is printed: with fewer cores than engines x threads, engines compete.
Ray sets OMP_NUM_THREADS=1 in a 1-CPU actor, so each engine computes on about one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import ray

REPO = Path(__file__).resolve().parents[1]


def bench(model: Path, engines: int, args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    from openrs_ray.config import load_config
    from openrs_ray.data.sources import PromptSource
    from openrs_ray.generators.group import GeneratorGroup

    cfg = load_config(REPO / "configs/smoke.yaml", [
        f"model.path={model}", f"data.path={REPO / 'configs/data/gsm8k_mini.jsonl'}",
        f"generation.num_engines={engines}", f"generation.max_completion_length={args.max_tokens}",
        f"generation.num_generations={args.generations}", f"prompts_per_step={args.prompts}",
    ])  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    source = PromptSource(cfg.data, tokenizer, cfg.generation.max_prompt_length)
    t0 = time.perf_counter()
    group = GeneratorGroup(cfg)
    try:
        group.wait_ready()
        start_s = time.perf_counter() - t0
        group.generate(source.next_batch(args.prompts))  # warm-up
        calls = []
        for _ in range(args.batches):
            prompts = source.next_batch(args.prompts)
            t0 = time.perf_counter()
            groups = group.generate(prompts)
            seconds = time.perf_counter() - t0
            rollouts = [r for g in groups for r in g]
            assert len(rollouts) == args.prompts * args.generations
            calls.append({
                "seconds": seconds, "completion_tokens": sum(len(r.completion_ids) for r in rollouts),
                "prompt_tokens": sum(len(p.token_ids) for p in prompts), "rollouts": len(rollouts),
                "finished_by_length": sum(r.finish_reason == "length" for r in rollouts),
                "engines_used": sorted({r.engine_id for r in rollouts}),
            })  # fmt: skip
    finally:
        group.shutdown()
    seconds = sum(c["seconds"] for c in calls)
    tokens = sum(c["completion_tokens"] for c in calls)
    n_prompts, n_rollouts = args.prompts * args.batches, sum(c["rollouts"] for c in calls)
    return {
        "engines": engines, "start_s": start_s, "batches": args.batches, "prompts_per_batch": args.prompts,
        "seconds": seconds, "s_per_batch": seconds / args.batches, "completion_tokens": tokens,
        "tokens_per_s": tokens / seconds, "prompts_per_s": n_prompts / seconds, "rollouts_per_s": n_rollouts / seconds,
        "mean_completion_tokens": tokens / n_rollouts,
        "share_finished_by_length": sum(c["finished_by_length"] for c in calls) / n_rollouts,
        "mean_prompt_tokens": sum(c["prompt_tokens"] for c in calls) / n_prompts, "calls": calls,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, nargs="+", default=[1, 2], help="engine counts to compare")
    parser.add_argument("--batches", type=int, default=5, help="timed generate() calls per engine count")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per generate() call")
    parser.add_argument("--generations", type=int, default=8, help="generation.num_generations")
    parser.add_argument("--max-tokens", type=int, default=128, help="generation.max_completion_length")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/generation.json"))
    args = parser.parse_args()

    from openrs_ray.demo.tiny import make_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "tiny")
        ray.init(num_cpus=4, object_store_memory=1 << 30, include_dashboard=False, log_to_driver=False)
        try:
            rows = [bench(model, n, args) for n in args.engines]
        finally:
            ray.shutdown()
        model_cfg = json.loads((model / "config.json").read_text())

    cores = os.cpu_count()
    shape = {k: model_cfg[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
    print(f"\nGeneration: tiny Qwen2 {shape}, vLLM CPU, {args.prompts} prompts x {args.generations} generations "
          f"per call, <= {args.max_tokens} new tokens; warm-up + {args.batches} calls")  # fmt: skip
    print(f"NOTE: this machine has {cores} CPU cores (Ray was given num_cpus=4): {max(args.engines)} engines share "
          f"{cores} real cores and compete for them. Ray sets OMP_NUM_THREADS=1 in a 1-CPU actor, so one engine "
          f"computes on about one core (~100% CPU observed) and leaves the other to the driver/Ray.")  # fmt: skip
    print(f"{'engines':>7}{'start s':>9}{'s/call':>8}{'tokens/s':>10}{'prompts/s':>11}{'rollouts/s':>12}"
          f"{'mean len':>10}{'hit max':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['engines']:>7}{r['start_s']:>9.1f}{r['s_per_batch']:>8.2f}{r['tokens_per_s']:>10.0f}"
              f"{r['prompts_per_s']:>11.2f}{r['rollouts_per_s']:>12.1f}{r['mean_completion_tokens']:>10.1f}"
              f"{r['share_finished_by_length']:>9.0%}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": cores, "ray_num_cpus": 4,
            "model": shape, "args": vars(args)}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

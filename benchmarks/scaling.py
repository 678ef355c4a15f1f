"""Generator scaling on a three-node loopback cluster: step time and generator busy fraction for 1, 2 and 3
engines, then the autoscaler's choice on the same workload.

    python benchmarks/scaling.py [--engines 1 2 3] [--steps 4] [--warmup 1] [--auto-steps 40] [--prompts 4]
                                 [--generations 8] [--max-tokens 64] [--out benchmarks/results/scaling.json]

Nodes (benchmarks/_cluster.py): head (verifiers), gen (generator: 3), learn (learner: 1); runs use
cluster.role_resources=true so each role lands on its node. The driver joins the cluster and runs the
Orchestrator in-process (as benchmarks/modes.py does), one run per engine count, then one with
generation.autoscale (min 1, max 3, from 1 engine) for --auto-steps steps. Busy fraction = engine busy seconds
gained over the timed steps / (window wall x engines), read as in modes.py. The autoscaler's choice is the
engine count serving at the end of its run; the trace lists every decision.

On this 2-core machine the point is not the absolute speed but whether the control loop settles on the count
the fixed runs show to be fastest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/scaling.py` from the repository root

NODES = {"head": (2, {"verifier": 2}), "gen": (3, {"generator": 3}), "learn": (2, {"learner": 1})}


def config(model: Path, out: Path, engines: int, args: argparse.Namespace, auto: bool):
    from openrs_ray.config import load_config

    overrides = [
        f"model.path={model}", f"output_dir={out}", f"data.path={REPO / 'configs/data/gsm8k_mini.jsonl'}",
        f"prompts_per_step={args.prompts}", f"generation.num_generations={args.generations}",
        f"generation.max_completion_length={args.max_tokens}", f"generation.num_engines={engines}",
        "metrics.progress_bar=false", "cluster.role_resources=true",
    ]  # fmt: skip
    if auto:
        overrides += ["generation.autoscale.enabled=true", "generation.autoscale.min_engines=1",
                      "generation.autoscale.max_engines=3", "generation.autoscale.cooldown_steps=1",
                      "generation.autoscale.window_steps=2"]  # fmt: skip
    return load_config(REPO / "configs/smoke.yaml", overrides)


def fixed(model: Path, out: Path, engines: int, args: argparse.Namespace) -> dict:
    from openrs_ray.orchestrator import Orchestrator

    orch = Orchestrator(config(model, out, engines, args, auto=False))
    try:
        orch.setup()
        for _ in range(args.warmup):
            orch.step()
        busy0 = orch.generators.busy_seconds()  # engines idle here (synchronous steps)
        t0 = time.perf_counter()
        steps = [orch.step() for _ in range(args.steps)]
        busy1 = orch.generators.busy_seconds()
        window = time.perf_counter() - t0
    finally:
        orch.shutdown()
    step_s = [m["time_step_s"] for m in steps]
    return {
        "engines": engines, "median_step_s": statistics.median(step_s), "mean_step_s": statistics.mean(step_s),
        "generate_s": statistics.mean(m["time_generate_s"] for m in steps),
        "busy_fraction": (busy1 - busy0) / (window * engines), "step_s": step_s,
    }  # fmt: skip


def autoscaled(model: Path, out: Path, args: argparse.Namespace) -> dict:
    from openrs_ray.orchestrator import Orchestrator

    orch = Orchestrator(config(model, out, 1, args, auto=True))
    try:
        orch.setup()
        steps = [orch.step() for _ in range(args.auto_steps)]
    finally:
        orch.shutdown()
    trace = [(m["num_engines"], m["generator_target"], m["generator_scale_reason"]) for m in steps]
    tail = steps[-args.steps :]
    return {
        "choice": steps[-1]["num_engines"], "trace": trace,
        "median_step_s_last": statistics.median(m["time_step_s"] for m in tail),
        "engine_steps": {n: sum(m["num_engines"] == n for m in steps) for n in (1, 2, 3)},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, nargs="+", default=[1, 2, 3], help="fixed engine counts")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per fixed run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per fixed run first")
    parser.add_argument("--auto-steps", type=int, default=40, help="steps of the autoscaled run")
    parser.add_argument("--prompts", type=int, default=4, help="prompts_per_step")
    parser.add_argument("--generations", type=int, default=8, help="generation.num_generations")
    parser.add_argument("--max-tokens", type=int, default=64, help="generation.max_completion_length")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/scaling.json"))
    args = parser.parse_args()

    import ray

    from benchmarks._cluster import loopback_cluster
    from openrs_ray.models.tiny import make_tiny_model

    t_all = time.perf_counter()
    rows, auto = [], {}
    with tempfile.TemporaryDirectory() as tmp, loopback_cluster(NODES) as address:
        model = make_tiny_model(Path(tmp) / "tiny")
        ray.init(address=address, log_to_driver=False)
        try:
            for n in args.engines:
                rows.append(fixed(model, Path(tmp) / f"run-{n}", n, args))
                print(f"{n} engine(s): median step {rows[-1]['median_step_s']:.2f}s", flush=True)
            auto = autoscaled(model, Path(tmp) / "run-auto", args)
        finally:
            ray.shutdown()
    total_s = time.perf_counter() - t_all
    report(rows, auto, args, total_s)


def report(rows: list[dict], auto: dict, args: argparse.Namespace, total_s: float) -> None:
    best = min(rows, key=lambda r: r["median_step_s"])["engines"]
    print(f"\nGenerator scaling: tiny Qwen2 on a 3-node loopback cluster ({os.cpu_count()} CPU cores), "
          f"{args.prompts} prompts x {args.generations} completions x <= {args.max_tokens} tokens per step "
          f"({total_s:.0f}s in all)")  # fmt: skip
    print(f"{'engines':>8}{'median step s':>15}{'generate s':>12}{'gen busy':>10}")
    for r in rows:
        print(f"{r['engines']:>8}{r['median_step_s']:>15.2f}{r['generate_s']:>12.2f}{r['busy_fraction']:>10.0%}")
    print(f"{'auto':>8}{auto['median_step_s_last']:>15.2f}   chose {auto['choice']} engine(s) "
          f"(fastest fixed: {best}); steps at 1/2/3 engines: {auto['engine_steps']}")  # fmt: skip
    print("autoscale trace (serving, target, reason):", auto["trace"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "nodes": NODES,
            "total_s": total_s, "args": vars(args), "fastest_fixed": best}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "fixed": rows, "autoscale": auto}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Synchronous vs asynchronous GRPO steps: the full Orchestrator on the tiny model, for buffer.max_staleness 0/1/2.

    python benchmarks/modes.py [--staleness 0 1 2] [--steps 6] [--warmup 2] [--engines 2] [--learners 2]
                               [--prompts 4] [--generations 4] [--max-tokens 64] [--out benchmarks/results/modes.json]

A tiny Qwen2 (openrs_ray.demo.tiny.make_tiny_model) is written to a temp dir. For each max_staleness an
Orchestrator is built from configs/smoke.yaml (generation.num_engines, learner.num_learners, prompts_per_step,
generation.num_generations / max_completion_length, metrics.progress_bar=false), set up, run `--warmup` steps,
then `--steps` timed steps; it is shut down before the next mode. One Ray cluster serves every mode.
Reported: median step time (the step metrics' time_step_s), mean seconds per phase (time_<phase>_s),
staleness_mean, and the generator busy fraction = busy seconds gained by all engines (GeneratorGroup.busy_seconds)
/ (window wall seconds x engines).
The busy counter is read with an actor call that queues behind the engine's generate calls, so reading it
waits for batches still in flight (max_staleness of them in async mode). The window therefore runs from the
first read (engines idle) to the end of the second read (engines idle again): it covers the timed steps plus
the drain of the batches they left in flight ('drain s'), and every generated second in it is counted once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import ray

REPO = Path(__file__).resolve().parents[1]
PHASES = ["scale", "generate", "verify", "refill", "learn", "broadcast"]


def bench(model: Path, out: Path, staleness: int, args: argparse.Namespace) -> dict:
    from openrs_ray.config import load_config
    from openrs_ray.stages.orchestrator import Orchestrator

    cfg = load_config(REPO / "configs/smoke.yaml", [
        f"model.path={model}", f"output_dir={out}", f"data.path={REPO / 'configs/data/gsm8k_mini.jsonl'}",
        f"prompts_per_step={args.prompts}", f"generation.num_generations={args.generations}",
        f"generation.max_completion_length={args.max_tokens}", f"generation.num_engines={args.engines}",
        f"learner.num_learners={args.learners}", f"buffer.max_staleness={staleness}", "metrics.progress_bar=false",
    ])  # fmt: skip
    orch = Orchestrator(cfg)
    try:
        t0 = time.perf_counter()
        orch.setup()
        setup_s = time.perf_counter() - t0
        for _ in range(args.warmup):
            orch.step()
        busy0 = orch.generators.busy_seconds()  # waits for the batches in flight: engines idle from here
        t0 = time.perf_counter()
        steps = [orch.step() for _ in range(args.steps)]
        steps_wall = time.perf_counter() - t0
        busy1 = orch.generators.busy_seconds()  # waits for the batches these steps left in flight
        window = time.perf_counter() - t0
        engines = len(orch.generators.engines)
    finally:
        orch.shutdown()
    step_s = [m["time_step_s"] for m in steps]
    return {
        "max_staleness": staleness, "setup_s": setup_s, "median_step_s": statistics.median(step_s),
        "mean_step_s": statistics.mean(step_s), "steps_wall_s": steps_wall, "window_s": window,
        "drain_s": window - steps_wall, "busy_s": busy1 - busy0, "engines": engines,
        "busy_fraction": (busy1 - busy0) / (window * engines),
        "phase_mean_s": {p: statistics.mean(m.get(f"time_{p}_s", 0.0) for m in steps) for p in PHASES},
        "staleness_mean": statistics.mean(m["staleness_mean"] for m in steps),
        "groups_trained": sum(m["groups_trained"] for m in steps),
        "dropped_stale": sum(m["dropped_stale"] for m in steps),
        "steps": [{k: v for k, v in m.items() if k.startswith("time_") or k.startswith("staleness_")}
                  | {"weight_version": m["weight_version"], "groups_trained": m["groups_trained"]} for m in steps],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2], help="buffer.max_staleness values")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per mode first")
    parser.add_argument("--engines", type=int, default=2, help="generation.num_engines")
    parser.add_argument("--learners", type=int, default=2, help="learner.num_learners")
    parser.add_argument("--prompts", type=int, default=4, help="prompts_per_step")
    parser.add_argument("--generations", type=int, default=4, help="generation.num_generations")
    parser.add_argument("--max-tokens", type=int, default=64, help="generation.max_completion_length")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/modes.json"))
    args = parser.parse_args()

    from openrs_ray.demo.tiny import make_tiny_model

    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "tiny")
        model_cfg = json.loads((model / "config.json").read_text())
        ray.init(num_cpus=8, object_store_memory=1 << 30, include_dashboard=False, log_to_driver=False)
        try:
            for s in args.staleness:
                rows.append(bench(model, Path(tmp) / f"run-s{s}", s, args))
                print(f"max_staleness={s}: median step {rows[-1]['median_step_s']:.2f}s", flush=True)
        finally:
            ray.shutdown()
    total_s = time.perf_counter() - t_all

    cores = os.cpu_count()
    shape = {k: model_cfg[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
    print(f"\nGRPO modes: tiny Qwen2 {shape}, CPU, {args.engines} vLLM engines + {args.learners} DeepSpeed learners; "
          f"{args.prompts} prompts x {args.generations} generations per step, <= {args.max_tokens} new tokens; "
          f"{args.warmup} warm-up + {args.steps} timed steps per mode ({total_s:.0f}s in all)")  # fmt: skip
    print(f"NOTE: this machine has {cores} CPU cores (Ray was given num_cpus=8 logical CPUs): {args.engines} engines, "
          f"{args.learners} learners, the verifiers and the driver all compete for them, so generating the next "
          f"batches while learning (max_staleness > 0) mostly time-shares the same cores; async overlap gains "
          f"are bounded by that.")  # fmt: skip
    head = "".join(f"{p[:6] + ' s':>10}" for p in PHASES)
    print(f"{'stale':>5}{'setup s':>9}{'med step s':>11}{head}{'stale mean':>11}{'gen busy':>9}{'drain s':>8}")
    for r in rows:
        phases = "".join(f"{r['phase_mean_s'][p]:>10.3f}" for p in PHASES)
        print(f"{r['max_staleness']:>5}{r['setup_s']:>9.1f}{r['median_step_s']:>11.2f}{phases}"
              f"{r['staleness_mean']:>11.2f}{r['busy_fraction']:>9.0%}{r['drain_s']:>8.2f}")  # fmt: skip
    print(
        "phase columns: mean seconds per timed step; gen busy: engine busy seconds / (window wall x engines), "
        "window = timed steps + drain of the batches they left in flight"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": cores, "ray_num_cpus": 8,
            "model": shape, "total_s": total_s, "args": vars(args)}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

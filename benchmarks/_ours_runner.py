"""One openrs_ray run for benchmarks/vs_trl.py, in its own process: `python _ours_runner.py STALENESS SPEC OUT`.

The same JSON workload as _trl_runner.py, turned into configs/smoke.yaml overrides: one vLLM engine, one DeepSpeed
learner, the verifier pool, an embedded Ray cluster started (and stopped) by this process, and
buffer.max_staleness = STALENESS (0: synchronous on-policy; 1: generation of the next batch overlaps learning).
OUT receives setup seconds and, per step, its wall seconds, completion tokens, mean reward and the Orchestrator's
own phase times (time_<phase>_s), folded into the columns the TRL runs report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from _cpu_clock import tree_cpu_s

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]


def overrides(spec: dict[str, Any], staleness: int) -> list[str]:
    """configs/smoke.yaml overrides that give the workload's shape and the settings the TRL runs use."""
    rewards = ", ".join(f"{{name: {name}, weight: 1.0}}" for name in spec["rewards"])
    # Torch threads per actor (Ray sets OMP_NUM_THREADS from num_cpus), as vs_trl.py split the total cores
    # (_bench_stats.core_split); the JSON reports the split.
    split = spec["split"]["ours_async" if staleness else "ours_sync"]
    eager = "true" if spec["enforce_eager"] else "false"
    return [
        f"model.path={spec['model']}", "model.dtype=float32",
        f"output_dir={Path(spec['out_dir']) / f'ours-s{staleness}'}",
        f"max_steps={spec['warmup'] + spec['steps']}", f"seed={spec['seed']}",
        f"data.path={spec['data']}", "data.shuffle=false", f"data.system_prompt={json.dumps(spec['system_prompt'])}",
        f"prompts_per_step={spec['prompts_per_step']}", "generation.num_engines=1",
        f"generation.num_generations={spec['num_generations']}",
        f"generation.max_prompt_length={spec['max_prompt_length']}",
        f"generation.max_completion_length={spec['max_completion_length']}",
        f"generation.temperature={spec['temperature']}", f"generation.kv_cache_gib={spec['kv_cache_gib']}",
        f"generation.enforce_eager={eager}",
        f"rewards.functions=[{rewards}]", "rewards.num_workers=2",
        f"buffer.max_staleness={staleness}", "buffer.advantage_scale=group",
        "learner.num_learners=1", f"learner.lr={spec['lr']}", "learner.lr_scheduler_type=constant",
        f"learner.micro_batch_size={spec['micro_batch_size']}", f"learner.beta={spec['beta']}",
        f"learner.epsilon={spec['epsilon']}", f"learner.loss_type={spec['loss_type']}", "learner.num_iterations=1",
        f"learner.importance_sampling_cap={spec['is_cap']}", "learner.gradient_checkpointing=false",
        f"cluster.num_cpus={split['engine'] + split['learner'] + 2}", f"cluster.generator_cpus={split['engine']}",
        f"cluster.learner_cpus={split['learner']}",
        "metrics.progress_bar=false", "metrics.jsonl=false",
    ]  # fmt: skip


def step_record(m: dict[str, Any], wall: float, cpu: float) -> dict[str, Any]:
    """One step's measurements in the columns shared with the TRL runs."""
    sec = {k[len("time_") : -len("_s")]: v for k, v in m.items() if k.startswith("time_") and k.endswith("_s")}
    phases = {p: sec.get(p, 0.0) for p in ("generate", "verify", "broadcast", "learn")}
    phases["other"] = wall - sum(phases.values())  # scale + refill + buffer + driver bookkeeping
    return {
        "wall_s": wall, "cpu_s": cpu, "tokens": m["completion_tokens"], "phases": phases,
        "reward_mean": m["reward_mean"], "staleness_mean": m.get("staleness_mean", 0.0),
    }  # fmt: skip


def _mark(name: str) -> None:
    """For profile_step.py: touch OPENRS_PROFILE_MARKS/<name> and give its profiler a moment to attach."""
    marks = os.environ.get("OPENRS_PROFILE_MARKS")
    if marks:
        (Path(marks) / name).touch()
        if name == "ready":
            time.sleep(3.0)  # py-spy attaching to every process of the tree takes ~1-2 s


def run(staleness: int, spec: dict[str, Any]) -> dict[str, Any]:
    """Set up an Orchestrator and run `spec["warmup"] + spec["steps"]` steps; the steps' records."""
    from openrs_ray.cluster import ray_cluster
    from openrs_ray.config import load_config
    from openrs_ray.stages.orchestrator import Orchestrator

    cfg = load_config(REPO / "configs/smoke.yaml", overrides(spec, staleness))
    record: dict[str, Any] = {"steps": []}
    with ray_cluster(cfg.cluster):
        orch = Orchestrator(cfg)
        try:
            orch.setup()
            record["setup_s"] = time.perf_counter() - T_START
            for i in range(cfg.max_steps):
                if i == spec["warmup"]:
                    _mark("ready")
                t0, cpu0 = time.perf_counter(), tree_cpu_s()
                metrics = orch.step()
                record["steps"].append(step_record(metrics, time.perf_counter() - t0, tree_cpu_s() - cpu0))
            _mark("done")
        finally:
            orch.shutdown()
    return record


def main() -> None:
    staleness, spec_path, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    record = run(staleness, json.loads(Path(spec_path).read_text()))
    Path(out_path).write_text(json.dumps(record))


if __name__ == "__main__":
    main()

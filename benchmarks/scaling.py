"""Generator scaling on a three-node loopback cluster: step time and generator busy fraction for 1, 2 and 3
engines, then the autoscaler's choice on the same workload.

    python benchmarks/scaling.py [--engines 1 2 3] [--rounds 2] [--steps 8] [--warmup 1] [--auto-steps 48]
                                 [--prompts 12] [--generations 16] [--max-tokens 128] [--quick] [--out PATH]

Nodes (tests/integration/loopback.py, as the multi-node tests start them): head (driver, verifiers), gen
(generator: 3), learn (learner: 1); every run sets cluster.role_resources=true so each role lands on its node.
The driver joins the cluster and runs the Orchestrator in-process (as benchmarks/modes.py does): --rounds runs per
engine count (a warm-up step, then --steps timed steps each; the order alternates, 1 2 3 then 3 2 1, so a drift of
the machine's speed does not favour one count), then one with generation.autoscale (min 1, max 3, from 1 engine)
for --auto-steps steps.

Per step, the numbers the autoscaler decides on (openrs_ray.autoscale.observation and BusyProbe): the learner
wait fraction, (generate + refill seconds) / (step - scale seconds), and the engine busy fraction, engine
generating seconds / (engines x wall seconds between two probes after consecutive steps). Fixed runs read them
with their own BusyProbe; the autoscaled run records what its controller saw (Autoscaler.observed).
The autoscaler's choice is the engine count serving over the last --settle steps; the trace lists its decisions.

On this 2-core machine the point is not the absolute speed but whether the control loop settles on the count
the fixed runs show to be best: the fewest engines whose median step is within the controller's min_gain of the
fastest (an engine that does not cut the step by min_gain is not worth its GPU, which is the controller's own rule;
on 2 shared cores two counts are often that close).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/scaling.py`: openrs_ray and tests.integration.loopback

from _bench_stats import machine, spread, versions  # noqa: E402

# name: (logical CPUs, role resources); the first is the head. 3 engines x generation.generator_cpus=1 on gen.
NODES: dict[str, tuple[int, dict[str, float]]] = {
    "head": (2, {"verifier": 2}),
    "gen": (3, {"generator": 3}),
    "learn": (2, {"learner": 1}),
}
PHASES = ["scale", "generate", "verify", "refill", "learn", "broadcast"]
AUTOSCALE = {
    "enabled": "true", "min_engines": 1, "max_engines": 3, "cooldown_steps": 1, "window_steps": 4, "min_gain": 0.05,
}  # fmt: skip


def overrides(model: Path, out: Path, engines: int, args: argparse.Namespace, auto: bool) -> list[str]:
    """configs/smoke.yaml overrides of one run (the workload is the same in every run)."""
    items = [
        f"model.path={model}", f"output_dir={out}", f"data.path={REPO / 'configs/data/gsm8k_mini.jsonl'}",
        f"prompts_per_step={args.prompts}", f"generation.num_generations={args.generations}",
        f"generation.max_completion_length={args.max_tokens}", f"generation.num_engines={engines}",
        f"learner.micro_batch_size={args.micro_batch}", f"cluster.learner_cpus={args.learner_cpus}",
        f"learner.lr={args.lr}", "learner.lr_scheduler_type=constant",
        "metrics.progress_bar=false", "cluster.role_resources=true",
    ]  # fmt: skip
    return items + ([f"generation.autoscale.{k}={v}" for k, v in AUTOSCALE.items()] if auto else [])


def step_row(m: Any, observed: Any) -> dict[str, Any]:
    """One step's record: phases, engines, the scaling decision and what the controller reads."""
    return {
        "step": m["step"], "engines": m["num_engines"], "target": m["generator_target"],
        "reason": m["generator_scale_reason"], "step_s": m["time_step_s"],
        **{f"{p}_s": m.get(f"time_{p}_s", 0.0) for p in PHASES},
        "completion_tokens": m["completion_tokens"], "groups_trained": m["groups_trained"],
        "wait_fraction": observed.wait_fraction if observed else None,
        "busy_fraction": observed.busy_fraction if observed else None,
    }  # fmt: skip


def run_fixed(model: Path, out: Path, engines: int, args: argparse.Namespace) -> dict[str, Any]:
    """A warm-up step, then timed steps with `engines` engines; the controller's view of each timed step."""
    from openrs_ray.autoscale import BusyProbe, observation
    from openrs_ray.config import load_config
    from openrs_ray.stages.orchestrator import Orchestrator

    orch = Orchestrator(load_config(REPO / "configs/smoke.yaml", overrides(model, out, engines, args, False)))
    probe, steps = BusyProbe(), []
    try:
        t0 = time.perf_counter()
        orch.setup()
        setup_s = time.perf_counter() - t0
        for _ in range(args.warmup):
            orch.step()
        probe.read(orch.generators.engines)  # between synchronous steps the engines are idle: a clean start
        for _ in range(args.steps):
            m = orch.step()
            steps.append(step_row(m, observation(m, probe.read(orch.generators.engines))))
    finally:
        orch.shutdown()
    return {"engines": engines, "setup_s": setup_s, **summary(steps), "steps": steps}


def run_autoscaled(model: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """generation.autoscale from 1 engine; each step's row holds the observation its decision was made on
    (the step before it, as the Autoscaler measured it before the step ran)."""
    from openrs_ray.config import load_config
    from openrs_ray.stages.orchestrator import Orchestrator

    orch = Orchestrator(load_config(REPO / "configs/smoke.yaml", overrides(model, out, 1, args, True)))
    steps = []
    try:
        orch.setup()
        for _ in range(args.auto_steps):
            m = orch.step()
            steps.append(step_row(m, orch.autoscaler.observed))
    finally:
        orch.shutdown()
    engines = [s["engines"] for s in steps]
    tail = steps[-args.settle :]
    return {
        "choice": settled(engines, args.settle), "engine_steps": dict(sorted(Counter(engines).items())),
        "trace": decisions(steps), "tail_median_step_s": statistics.median(s["step_s"] for s in tail),
        "steps": steps,
    }  # fmt: skip


def summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of the timed steps' seconds, mean phases, and the controller's mean readings."""
    busy = [s["busy_fraction"] for s in steps if s["busy_fraction"] is not None]
    return {
        "median_step_s": statistics.median(s["step_s"] for s in steps),
        "spread_step_s": spread([s["step_s"] for s in steps]),
        "phase_mean_s": {p: statistics.fmean(s[f"{p}_s"] for s in steps) for p in PHASES},
        "wait_fraction": statistics.fmean(s["wait_fraction"] for s in steps),
        "busy_fraction": statistics.fmean(busy) if busy else None,
    }  # fmt: skip


def settled(engines: list[int], tail: int) -> int | None:
    """The engine count serving in each of the last `tail` steps, or None when it still changed there."""
    last = engines[-tail:]
    return last[0] if last and len(set(last)) == 1 else None


def decisions(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trace, one entry per run of consecutive steps with the same (engines, target, reason)."""
    trace: list[dict[str, Any]] = []
    for s in steps:
        key = {"engines": s["engines"], "target": s["target"], "reason": s["reason"]}
        if trace and {k: trace[-1][k] for k in key} == key:
            trace[-1]["last_step"] = s["step"]
        else:
            trace.append({"first_step": s["step"], "last_step": s["step"], **key})
    return trace


def fastest(rows: list[dict[str, Any]]) -> int:
    """The fixed engine count with the lowest median step time."""
    return min(rows, key=lambda r: r["median_step_s"])["engines"]


def best(rows: list[dict[str, Any]], min_gain: float) -> int:
    """The fewest engines that no other count beats by min_gain or more (the controller's rule for a grow)."""
    quickest = min(r["median_step_s"] for r in rows)
    return min(r["engines"] for r in rows if quickest > r["median_step_s"] * (1 - min_gain))


def pooled(engines: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per engine count from its runs in every round: the timed steps pooled, each round's median kept."""
    steps = [s for r in runs for s in r["steps"]]
    return {
        "engines": engines, "setup_s": [r["setup_s"] for r in runs],
        "round_median_step_s": [r["median_step_s"] for r in runs], **summary(steps), "steps": steps,
    }  # fmt: skip


def fixed_order(engines: list[int], rounds: int) -> list[int]:
    """The fixed runs in order: ascending in even rounds, descending in odd ones."""
    return [n for r in range(rounds) for n in (engines if r % 2 == 0 else engines[::-1])]


def _registered(state: dict[str, Any]) -> set[str]:
    """Names of NODES alive in Ray's state (each is told apart by its role resource)."""
    alive = [n["resources"] for n in state["nodes"] if n["alive"]]
    return {name for name, (_, res) in NODES.items() if any(all(r.get(k) for k in res) for r in alive)}


def wait_registered(procs: dict[str, subprocess.Popen], env: dict[str, str], dash: int, timeout_s: float) -> None:
    """Wait until Ray's state API lists every node alive; fail naming the nodes that did not register."""
    from tests.integration.loopback import cluster_state

    deadline, last_error, seen = time.monotonic() + timeout_s, "", set()
    while True:
        dead = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"loopback node(s) exited before registering (name: exit code): {dead}")
        try:
            seen, last_error = _registered(cluster_state(env, dash)), ""
        except (AssertionError, subprocess.TimeoutExpired, json.JSONDecodeError) as err:  # dashboard still starting
            last_error = str(err)[-300:]
        if seen == set(NODES):
            return
        if time.monotonic() > deadline:
            missing = sorted(set(NODES) - seen)
            raise TimeoutError(f"loopback node(s) {missing} did not register with the head within {timeout_s:.0f}s"
                               f" (registered: {sorted(seen)}; last state-API error: {last_error or '-'})")  # fmt: skip
        time.sleep(3)


@contextmanager
def loopback_cluster(tag: str, register_s: float) -> Iterator[str]:
    """Start NODES (the head first); yields the GCS address; stops every node by the pids it started."""
    from tests.integration.loopback import free_port, head_args, node_env, port_open, start_node, stop_nodes

    # Actors at niceness 0, as the embedded Ray of the other benchmarks (cluster.worker_niceness): at Ray's 15 any
    # other work on this shared machine takes the CPU from them, and more engines lose more to it.
    env = {**node_env(tag), "RAY_worker_niceness": "0"}
    temps = {name: tempfile.mkdtemp(prefix=f"orb{name[0]}", dir="/tmp") for name in NODES}  # short: socket paths
    gcs, dash = free_port(), free_port()
    procs: dict[str, subprocess.Popen] = {}
    try:
        (head, (cpus, res)), *workers = NODES.items()
        procs[head] = start_node(env, temps[head], cpus, res, head_args(gcs, dash))
        deadline = time.monotonic() + register_s
        while not (port_open(gcs) and port_open(dash)):
            if procs[head].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the head node did not open its GCS ({gcs}) and dashboard ({dash}) ports")
            time.sleep(1)
        for name, (cpus, res) in workers:
            procs[name] = start_node(env, temps[name], cpus, res, [f"--address=127.0.0.1:{gcs}"])
        wait_registered(procs, env, dash, max(60.0, deadline - time.monotonic()))
        yield f"127.0.0.1:{gcs}"
    finally:
        stop_nodes(list(procs.values()), tag)
        for temp in temps.values():
            shutil.rmtree(temp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, nargs="+", default=[1, 2, 3], help="fixed engine counts")
    parser.add_argument("--rounds", type=int, default=2, help="fixed runs per engine count (alternating order)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per fixed run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per fixed run first")
    parser.add_argument("--auto-steps", type=int, default=48, help="steps of the autoscaled run")
    parser.add_argument("--settle", type=int, default=10, help="last autoscaled steps that must hold one count")
    parser.add_argument("--prompts", type=int, default=12, help="prompts_per_step (divisible by 2 and 3)")
    parser.add_argument("--generations", type=int, default=16, help="generation.num_generations")
    parser.add_argument("--max-tokens", type=int, default=128, help="generation.max_completion_length")
    parser.add_argument("--micro-batch", type=int, default=32, help="learner.micro_batch_size")
    parser.add_argument("--lr", type=float, default=1e-6, help="learner.lr (small: at smoke's 1e-3 the tiny model "
                        "learns to stop early and the completions shrink 100x within 40 steps)")  # fmt: skip
    parser.add_argument("--learner-cpus", type=int, default=2, help="cluster.learner_cpus (its torch threads; "
                        "synchronous steps: the engines are idle while it learns)")  # fmt: skip
    parser.add_argument("--register-timeout", type=float, default=600.0, help="seconds for the nodes to register")
    parser.add_argument("--quick", action="store_true", help="a short smoke of the script (not a record)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/scaling.json; "
                        "with --quick a temp file)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:  # every code path, a few steps each
        args.engines, args.rounds, args.steps, args.auto_steps, args.settle = [1, 2], 1, 2, 8, 2
        args.max_tokens = 32
    if args.out is None:
        args.out = str(Path(tempfile.gettempdir()) / "scaling-quick.json" if args.quick
                       else REPO / "benchmarks/results/scaling.json")  # fmt: skip
    return args


def main() -> None:
    args = parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver joins a cluster with token auth off (ENV_NOTES.md)
    import ray

    from openrs_ray.demo.tiny import make_tiny_model
    from tests.integration.conftest import leftover_processes

    meta = {"machine": machine(), "versions": versions(), "nodes": NODES, "args": vars(args), "quick": args.quick,
            "autoscale": AUTOSCALE, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    tag, t_all = uuid.uuid4().hex, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, loopback_cluster(tag, args.register_timeout) as address:
        meta["cluster_up_s"] = time.perf_counter() - t_all
        model = make_tiny_model(Path(tmp) / "tiny")
        ray.init(address=address, log_to_driver=False)
        try:
            runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.engines}
            for i, n in enumerate(fixed_order(args.engines, args.rounds)):
                runs[n].append(run_fixed(model, Path(tmp) / f"run-{i}-{n}", n, args))
                print(f"{n} engine(s): median step {runs[n][-1]['median_step_s']:.2f}s", flush=True)
            rows = [pooled(n, runs[n]) for n in args.engines]
            auto = run_autoscaled(model, Path(tmp) / "run-auto", args)
        finally:
            ray.shutdown()
    meta["total_s"] = time.perf_counter() - t_all
    meta["leftover_processes"] = leftover_processes(tag)
    gain = float(AUTOSCALE["min_gain"])
    record = {"meta": meta, "fixed": rows, "autoscale": auto, "fastest_fixed": fastest(rows),
              "best_fixed": best(rows, gain)}  # fmt: skip
    report(record)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    if meta["leftover_processes"]:
        sys.exit(f"processes left behind: {meta['leftover_processes']}")


def report(record: dict[str, Any]) -> None:
    meta, rows, auto = record["meta"], record["fixed"], record["autoscale"]
    a = meta["args"]
    print(f"\nGenerator scaling: tiny Qwen2 on a 3-node loopback cluster ({meta['machine']['cores']} cores, "
          f"{meta['machine']['cpu_model']}); {a['prompts']} prompts x {a['generations']} completions x "
          f"<= {a['max_tokens']} tokens per step; {meta['total_s']:.0f}s in all")  # fmt: skip
    print(f"{'engines':>8}{'median s/step':>15}{'min-max':>14}{'generate s':>12}{'learn s':>9}"
          f"{'wait':>7}{'busy':>7}")  # fmt: skip
    for r in rows:
        sp, ph, busy = r["spread_step_s"], r["phase_mean_s"], r["busy_fraction"]
        print(f"{r['engines']:>8}{r['median_step_s']:>15.2f}{sp['min']:>7.2f}-{sp['max']:<6.2f}{ph['generate']:>12.2f}"
              f"{ph['learn']:>9.2f}{r['wait_fraction']:>7.0%}{'-' if busy is None else f'{busy:.0%}':>7}")  # fmt: skip
    print(f"{'auto':>8}{auto['tail_median_step_s']:>15.2f}  settled on {auto['choice']} engine(s); steps at each "
          f"count: {auto['engine_steps']}")  # fmt: skip
    print(f"fixed runs: fastest {record['fastest_fixed']} engine(s), best {record['best_fixed']} (fewest within "
          f"min_gain {meta['autoscale']['min_gain']:.0%} of the fastest); rounds' medians: "
          f"{ {r['engines']: [round(m, 2) for m in r['round_median_step_s']] for r in rows} }")  # fmt: skip
    print("autoscale decisions (steps: engines serving -> target, reason):")
    for d in auto["trace"]:
        print(f"  {d['first_step']:>3}-{d['last_step']:<3} {d['engines']} -> {d['target']}  {d['reason']}")


if __name__ == "__main__":
    main()

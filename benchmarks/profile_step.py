"""Where each CPU-second of a generation-heavy GRPO step goes, for our sync and async modes.

    python benchmarks/profile_step.py [--modes sync async] [--workload gen_heavy] [--warmup 1] [--steps 2]
                                      [--threads TOTAL_CORES] [--rate 25] [--out benchmarks/results/profile_step.json]

Runs benchmarks/_ours_runner.py (the vs_trl.py workload and core split) and, once its warm-up steps are done,
attaches py-spy (`record --subprocesses --format raw`, on-CPU samples only) to the whole process tree until the timed
steps end. Each sampled Python stack is put in one category by the first rule of CATEGORIES that matches any of its
frames; py-spy cannot see native processes (raylet, gcs_server), so the CPU seconds of every process over the same
window are also read from /proc (psutil) and reported per role. Needs py-spy (the `bench` extra) and ptrace rights.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from vs_trl import REPO, SYSTEMS, make_spec, parse_args

# (category, regex over "function (file:line)" frames); the first rule matching any frame of a stack wins, so the
# more specific rules come first (a weight load runs inside vLLM, the optimizer step inside the learner's update).
CATEGORIES = [
    ("weight export/load", r"broadcast/|worker_ext\.py|reload_weights|load_weights|state_dict|publish"),
    ("reward scoring", r"openrs_ray/rewards/|math_verify|latex2sympy|sympy/"),
    ("optimizer", r"torch/optim/|_take_model_step|clip_grad|\bstep \(.*deepspeed/runtime"),
    ("learner forward/backward", r"openrs_ray/learners/|torch/autograd/|deepspeed/"),
    ("detokenisation", r"detokeniz|tokenizers|decode_tokens|incremental_detok|convert_ids_to_tokens"),
    ("sampling/logprob processing", r"vllm/v1/sample/|_rollout \(|logprob|vllm/v1/engine/output_processor"),
    ("engine decode", r"vllm/model_executor/|vllm/v1/worker/|vllm/v1/attention|vllm/attention|torch/nn/"),
    ("engine scheduling", r"vllm/"),
    ("object-store copies", r"serializ|pickle|cloudpickle|numpy_to|get_objects|put_object|_raylet\.pyx.*(get|put)"),
    ("Ray overhead", r"ray/|_raylet|grpc"),
]


# A Ray actor between tasks sits in Worker.main_loop inside a native wait that py-spy's idle detection does not see
# through: measured as ~30% of all samples (Verifier, RunControl, idle engine and learner actors), while psutil
# gave those processes almost no CPU. Such samples are counted apart and left out of the CPU shares.
IDLE = "idle actors (not CPU)"
IDLE_LEAVES = ("Worker.main_loop (ray/_private/worker.py", "LogMonitor.run (ray/_private/log_monitor.py")


def categorise(stack: str) -> str:
    """The category of one `;`-joined py-spy stack (root first), "other" when no rule matches."""
    if stack.split(";")[-1].startswith(IDLE_LEAVES):
        return IDLE
    for name, pattern in CATEGORIES:
        if re.search(pattern, stack):
            return name
    return "other"


def parse_raw(text: str) -> tuple[Counter, dict[str, Counter]]:
    """Sample counts per category from py-spy's raw (collapsed-stack) output (`frame;frame;... count` lines), and
    per category the counts of its innermost three frames (what to look at first)."""
    counts: Counter = Counter()
    leaves: dict[str, Counter] = {}
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            name = categorise(stack)
            counts[name] += int(n)
            leaves.setdefault(name, Counter())[" <- ".join(reversed(stack.split(";")[-3:]))] += int(n)
    return counts, leaves


def role(proc: psutil.Process) -> str:
    """A process's role in the run, from its command line (Ray names actor processes ray::Class)."""
    try:
        cmd = " ".join(proc.cmdline()) or proc.name()
    except psutil.ZombieProcess:  # psutil says so for Ray workers whose title setproctitle rewrote; comm remains
        try:
            cmd = proc.name()
        except psutil.Error as e:
            return f"unreadable ({type(e).__name__})"
    except psutil.Error as e:
        return f"unreadable ({type(e).__name__})"
    for key, name in (("VLLMGen", "engine actor"), ("DeepSpeed", "learner actor"), ("Verifier", "verifier actors"),
                      ("raylet", "raylet"), ("gcs_server", "gcs_server"), ("_ours_runner", "driver")):  # fmt: skip
        if key in cmd:
            return name
    return f"other: {cmd[:40]}"


def tree_cpu(root: psutil.Process) -> dict[int, tuple[str, float]]:
    """Role and CPU seconds so far of every live process of the tree."""
    out = {}
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = (role(p), t.user + t.system)
        except psutil.Error:
            continue
    return out


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float) -> None:
    """Block until `path` exists; fail loudly when the runner exits or the timeout passes first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"runner exited with {proc.returncode} before {path.name}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name} after {timeout_s:.0f} s")
        time.sleep(0.2)


def profile(mode: str, spec_path: Path, tmp: Path, rate: int, timeout_s: float) -> dict[str, Any]:
    """Run one mode under py-spy from the end of warm-up to the end of the timed steps."""
    marks = tmp / f"marks-{mode}"
    marks.mkdir()
    script, arg = SYSTEMS[f"ours_{mode}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_worker_niceness": "0", "OPENRS_PROFILE_MARKS": str(marks)}
    env.pop("OMP_NUM_THREADS", None)
    log = (tmp / f"{mode}.log").open("w")
    cmd = [sys.executable, str(REPO / "benchmarks" / script), arg, str(spec_path), str(tmp / f"{mode}.json")]
    runner = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(marks / "ready", runner, timeout_s)
        raw = tmp / f"{mode}.raw"
        spy_bin = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        spy = subprocess.Popen([spy_bin, "record", "--pid", str(runner.pid), "--subprocesses",
                                "--format", "raw", "--rate", str(rate), "--nonblocking", "-o", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        root = psutil.Process(runner.pid)
        cpu0, t0 = tree_cpu(root), time.perf_counter()
        wait_for(marks / "done", runner, timeout_s)
        cpu1, wall = tree_cpu(root), time.perf_counter() - t0
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        spy.wait(timeout=60)
        runner.wait(timeout=timeout_s)
    finally:
        if runner.poll() is None:
            runner.kill()
        log.close()
    per_role: Counter = Counter()
    for pid, (name, cpu) in cpu1.items():
        per_role[name] += cpu - cpu0.get(pid, (name, 0.0))[1]
    samples, leaves = parse_raw(raw.read_text()) if raw.is_file() else (Counter(), {})
    record = json.loads((tmp / f"{mode}.json").read_text())
    daemons = per_role["raylet"] + per_role["gcs_server"]  # native: py-spy cannot sample them
    return {"wall_s": wall, "cpu_s": sum(per_role.values()), "daemon_cpu_s": daemons,
            "cpu_s_per_role": dict(per_role.most_common()),
            "samples": dict(samples.most_common()), "steps": record["steps"],
            "top_stacks": {k: dict(v.most_common(8)) for k, v in leaves.items()}}  # fmt: skip


def table(results: dict[str, Any]) -> None:
    """CPU seconds per step and share, per category, one column pair per mode; then CPU per process role.

    A category's CPU seconds: its share of the Python samples times the CPU seconds of the Python processes (py-spy
    sees a process's Python threads; torch's native worker threads' time goes with the stack that started them).
    """
    modes = list(results)
    head = " | ".join(f"{m} CPU s/step | {m} %" for m in modes)
    print(f"| category | {head} |\n|" + "---|" * (1 + 2 * len(modes)))
    for name in [c for c, _ in CATEGORIES] + ["other", "Ray daemons (raylet, gcs_server)"]:
        cells = []
        for m in modes:
            r = results[m]
            busy = sum(v for k, v in r["samples"].items() if k != IDLE) or 1
            share = r["samples"].get(name, 0) / busy
            cpu = r["daemon_cpu_s"] if name.startswith("Ray daemons") else share * (r["cpu_s"] - r["daemon_cpu_s"])
            cells += [f"{cpu / r['timed_steps']:.2f}", f"{100 * cpu / r['cpu_s']:.0f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for m in modes:
        r = results[m]
        per = ", ".join(f"{k} {v / r['timed_steps']:.2f}" for k, v in r["cpu_s_per_role"].items())
        print(f"{m}: {r['wall_s'] / r['timed_steps']:.2f} s/step wall, {r['cpu_s'] / r['timed_steps']:.2f} CPU s/step "
              f"({r['cpu_s'] / r['wall_s']:.2f} cores); CPU s/step per process: {per}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", choices=["sync", "async"], default=["sync", "async"])
    parser.add_argument("--workload", choices=["small", "gen_heavy"], default="gen_heavy")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before py-spy attaches")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="TOTAL cores (vs_trl.py's split)")
    parser.add_argument("--enforce-eager", action="store_true", help="run the engine eager")
    parser.add_argument("--async-threads", nargs=2, default=None, metavar=("ENGINE", "LEARNER"), help="see vs_trl.py")
    parser.add_argument("--rate", type=int, default=25, help="py-spy samples per second")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mode before giving up")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/profile_step.json"))
    a = parser.parse_args()
    bench = parse_args(["--quick", "--rounds", "1", "--threads", str(a.threads), "--warmup", str(a.warmup),
                        "--heavy-warmup", str(a.warmup), "--small-steps", str(a.steps), "--heavy-steps", str(a.steps),
                        *(["--enforce-eager"] if a.enforce_eager else []),
                        *(["--async-threads", *a.async_threads] if a.async_threads else [])])  # fmt: skip
    from openrs_ray.demo.tiny import make_tiny_model

    shared = REPO.parent / "shared/data/gsm8k_train.jsonl"
    data = shared if shared.is_file() else REPO / "configs/data/gsm8k_mini.jsonl"
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        spec = make_spec(bench, a.workload, make_tiny_model(tmp / "tiny"), data, tmp / a.workload)
        spec_path = tmp / "spec.json"
        spec_path.write_text(json.dumps(spec))
        for mode in a.modes:
            print(f"profiling {mode}: {a.warmup} warm-up + {a.steps} profiled {a.workload} steps ...", flush=True)
            results[mode] = profile(mode, spec_path, tmp, a.rate, a.timeout) | {"timed_steps": a.steps}
    table(results)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"workload": a.workload, "threads": a.threads, "split": {m: spec["split"][f"ours_{m}"] for m in a.modes},
            "enforce_eager": a.enforce_eager, "rate_hz": a.rate, "categories": CATEGORIES}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

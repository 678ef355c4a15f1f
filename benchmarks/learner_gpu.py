"""GPU learner throughput and MFU: a Qwen2.5-0.5B-shaped Qwen2 (random init, bf16, built in code: no download)
trained on one GPU with plain torch: CompletionLogprobs (our chunked logprobs) + the GRPO policy loss + AdamW.

    python benchmarks/learner_gpu.py [--rows 8] [--prompt-len 256] [--completion-len 1024] [--steps 10]
                                     [--warmup 3] [--peak-tflops 989] [--gradient-checkpointing]
                                     [--out benchmarks/results/learner_gpu.json]

Each step is one forward + backward + AdamW step over `--rows` rows of prompt + completion random tokens.
Learner tokens/s counts completion tokens (the 'learner_tokens' metric of the Ray learners); MFU is
6 * params * (all tokens)/s / (--peak-tflops, dense bf16; 989 for H100 SXM): the usual 6N estimate, which
leaves out attention FLOPs and counts the tied LM head at every position though only completion positions
run it (the two roughly cancel at these lengths). Weights and AdamW state are bf16 (no fp32 master copy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def build_model(layers: int, device: torch.device) -> torch.nn.Module:
    """Qwen2.5-0.5B's shape (494M parameters at 24 layers), randomly initialised, bf16."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32_768, rope_theta=1e6,
        rms_norm_eps=1e-6, tie_word_embeddings=True, use_cache=False, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    with device:
        model = Qwen2ForCausalLM(config)
    return model.to(torch.bfloat16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8, help="sequences per step (one micro-batch)")
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--completion-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--chunk-size", type=int, default=256, help="logprob chunk (tokens per row)")
    parser.add_argument("--layers", type=int, default=24, help="fewer for a quick smoke run")
    parser.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test this script)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/learner_gpu.json"))
    args = parser.parse_args()

    from openrs_ray.learners.logprobs import completion_logprobs
    from openrs_ray.learners.loss import policy_loss

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    model = build_model(args.layers, device)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    params = sum(p.numel() for p in model.parameters())  # the tied embedding counts once
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0, fused=device.type == "cuda")

    rows, p_len, c_len = args.rows, args.prompt_len, args.completion_len
    gen = torch.Generator(device=device).manual_seed(0)
    input_ids = torch.randint(3, model.config.vocab_size, (rows, p_len + c_len), device=device, generator=gen)
    attention_mask = torch.ones_like(input_ids)
    position_ids = torch.arange(p_len + c_len, device=device).expand(rows, -1)
    mask = torch.ones(rows, c_len, device=device)
    advantages = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(rows)], device=device)

    def step() -> float:
        logprobs = completion_logprobs(
            model, input_ids, attention_mask, position_ids, c_len, chunk_size=args.chunk_size
        )  # [rows, C]
        loss, _ = policy_loss(logprobs, logprobs.detach(), advantages, mask, loss_type="bnpo")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(args.warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    _sync(device)
    seconds = time.perf_counter() - t0
    assert all(torch.isfinite(torch.tensor(losses))), f"non-finite loss: {losses}"

    all_tokens_per_s = rows * (p_len + c_len) * args.steps / seconds
    row = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else args.device,
        "params": params, "layers": args.layers, "rows": rows, "prompt_len": p_len, "completion_len": c_len,
        "gradient_checkpointing": args.gradient_checkpointing, "chunk_size": args.chunk_size,
        "steps": args.steps, "s_per_step": seconds / args.steps,
        "learner_tokens_per_s": rows * c_len * args.steps / seconds, "all_tokens_per_s": all_tokens_per_s,
        "peak_tflops": args.peak_tflops, "mfu": 6 * params * all_tokens_per_s / (args.peak_tflops * 1e12),
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }  # fmt: skip
    print(f"{row['device']}: Qwen2 {params / 1e6:.0f}M params bf16, {rows} rows x ({p_len}+{c_len}) tokens/step")
    print(f"{'s/step':>8}{'learner tok/s':>15}{'all tok/s':>11}{'MFU':>8}{'peak GiB':>10}")
    mem = f"{row['peak_mem_gib']:.1f}" if row["peak_mem_gib"] is not None else "-"
    print(f"{row['s_per_step']:>8.3f}{row['learner_tokens_per_s']:>15.0f}{all_tokens_per_s:>11.0f}"
          f"{row['mfu']:>8.1%}{mem:>10}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": [row]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

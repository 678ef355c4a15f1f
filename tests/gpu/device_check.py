"""One-shot device check on one CUDA GPU, without Ray or vLLM (run by tests/gpu/device_check.sh).

Exercises what runs without Ray: the DeepSpeed learner class in bf16 under ZeRO-2 and ZeRO-3 with beta 0 and
0.04 (the reference model must sit on the GPU), gradient checkpointing, chunked logprobs at Qwen's vocabulary
(151,936) over 4,096 tokens with peak memory, one learner step of the DeepSeek-R1-Distill-Qwen-1.5B shape built
in code (tokens/s, MFU), the NCCL weight channel at world size 1 (real buckets, synchronised timing), and the
`gpu`-marked tests that need no Ray. Each part is recorded in one JSON summary; a failing part does not stop
the others. Usage: python tests/gpu/device_check.py OUT_DIR
"""

from __future__ import annotations

import gc
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# Dense bf16 tensor-core peak per GPU (vendor datasheets), for MFU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "A40": 149.7e12, "L40S": 362e12}
# DeepSeek-R1-Distill-Qwen-1.5B (its config.json): Qwen2, untied head.
QWEN_1_5B = dict(
    vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    num_key_value_heads=2, max_position_embeddings=131_072, rope_theta=10_000.0, tie_word_embeddings=False,
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(model_path: Path, *extra: str):
    from openrs_ray.config import load_config

    data = REPO / "configs/data/gsm8k_mini.jsonl"
    base = [f"model.path={model_path}", "model.dtype=bfloat16", "cluster.use_gpu=true", f"data.path={data}"]
    return load_config(REPO / "configs/smoke.yaml", [*base, *extra])


def _batch(rows: int, group: int, prompt_len: int, completion_len: int, vocab: int):
    import torch

    from openrs_ray.types import TrainBatch

    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (prompt_len,), generator=gen).tolist() for _ in range(rows // group)]
    return TrainBatch(
        prompt_ids=[prompts[i // group] for i in range(rows)],
        completion_ids=[torch.randint(3, vocab, (completion_len,), generator=gen).tolist() for _ in range(rows)],
        advantages=[1.0 if i % 2 == 0 else -1.0 for i in range(rows)],
        sampling_logprobs=[[-1.0] * completion_len] * rows, weight_versions=[0] * rows, loss_weights=[1.0] * rows,
    )  # fmt: skip


def _learner(cfg):
    """A DeepSpeedLearner rank 0 of world size 1, driven directly (no Ray)."""
    from openrs_ray.learners.deepspeed_actor import DeepSpeedLearner

    learner = DeepSpeedLearner(0, cfg)
    stats = learner.init("127.0.0.1", _free_port())  # the process group is made once and then reused
    return learner, stats


def _release(*objs: Any) -> None:
    import torch

    del objs
    gc.collect()
    torch.cuda.empty_cache()


def learner_matrix(tmp: Path) -> dict:
    """ZeRO-2/3 x beta 0/0.04 on a tiny Qwen2 in bf16 (gradient checkpointing in the ZeRO-3 cases): two updates
    each, finite losses, moved weights, and every module the learner holds on its GPU."""
    import torch

    from openrs_ray.demo.tiny import make_tiny_model

    model = make_tiny_model(tmp / "tiny")
    out = {}
    for stage in (2, 3):
        for beta in (0.0, 0.04):
            cfg = _config(model, f"learner.zero_stage={stage}", f"learner.beta={beta}", "prompts_per_step=2",
                          "generation.num_generations=4", "learner.micro_batch_size=2",
                          f"learner.gradient_checkpointing={'true' if stage == 3 else 'false'}")  # fmt: skip
            learner, stats = _learner(cfg)
            batch = _batch(cfg.rows_per_step, 4, 16, 24, vocab=500)
            before = learner.logprobs(batch.prompt_ids[0], batch.completion_ids[0])
            metrics = [learner.update(batch, sum(len(c) for c in batch.completion_ids)) for _ in range(2)]
            after = learner.logprobs(batch.prompt_ids[0], batch.completion_ids[0])
            ref_device = None if learner.ref is None else str(next(learner.ref.parameters()).device)
            case = {
                "init_s": stats["init_s"], "loss": [m["loss"] for m in metrics],
                "grad_norm": [m["grad_norm"] for m in metrics], "kl": [m.get("kl") for m in metrics],
                "engine_device": str(learner.engine.device), "ref_device": ref_device,
                "weights_moved": max(abs(a - b) for a, b in zip(before, after, strict=True)),
            }  # fmt: skip
            assert all(math.isfinite(x) for x in case["loss"] + case["grad_norm"]), case
            assert case["weights_moved"] > 0, case
            assert (beta > 0) == (learner.ref is not None), case
            out[f"zero{stage}_beta{beta}"] = case
            _release(learner)
            torch.cuda.synchronize()
    return out


def chunked_logprobs() -> dict:
    """Chunked vs naive logprobs at vocabulary 151,936 and 4,096 tokens (forward + backward), with peak memory."""
    import torch

    from openrs_ray.learners.logprobs import chunked_token_logprobs

    dev, V, T, H = torch.device("cuda"), QWEN_1_5B["vocab_size"], 4096, QWEN_1_5B["hidden_size"]
    gen = torch.Generator(device=dev).manual_seed(0)
    head = torch.nn.Linear(H, V, bias=False, device=dev, dtype=torch.bfloat16)
    hidden = torch.randn(1, T, H, device=dev, generator=gen, dtype=torch.bfloat16)
    targets = torch.randint(0, V, (1, T), device=dev, generator=gen)

    def run(fn: Callable) -> tuple[torch.Tensor, float]:
        h = hidden.clone().requires_grad_(True)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        values = fn(h)
        values.sum().backward()
        torch.cuda.synchronize()
        return values.detach(), (torch.cuda.max_memory_allocated() - base) / 2**30

    def naive(h):
        return head(h).float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    chunked, chunked_gib = run(lambda h: chunked_token_logprobs(h, head, targets))
    reference, naive_gib = run(naive)
    diff = (chunked - reference).abs().max().item()
    assert diff <= 2**-5, diff
    return {"tokens": T, "vocab": V, "peak_gib_chunked": chunked_gib, "peak_gib_naive": naive_gib, "max_abs_diff": diff}


def _build_1_5b(folder: Path) -> int:
    """The 1.5B shape with random weights, written as a bf16 Hugging Face folder; returns its parameter count."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**QWEN_1_5B, pad_token_id=0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    _release(model)
    return n


def step_1_5b(tmp: Path) -> tuple[dict, Any]:
    """One learner step of the 1.5B shape (ZeRO-2, beta 0.04, gradient checkpointing): tokens/s and MFU."""
    import torch

    params = _build_1_5b(tmp / "qwen-1.5b-shape")
    cfg = _config(tmp / "qwen-1.5b-shape", "learner.zero_stage=2", "learner.beta=0.04", "prompts_per_step=2",
                  "generation.num_generations=4", "learner.micro_batch_size=4", "learner.gradient_checkpointing=true",
                  "generation.max_prompt_length=512", "generation.max_completion_length=1024")  # fmt: skip
    learner, stats = _learner(cfg)
    batch = _batch(cfg.rows_per_step, 4, 512, 1024, vocab=QWEN_1_5B["vocab_size"])
    items = sum(len(c) for c in batch.completion_ids)
    learner.update(batch, items)  # warm-up: allocator, cuBLAS handles, optimizer state
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    metrics = learner.update(batch, items)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids, strict=True))
    # Model FLOPs: 6N per token for the policy's forward + backward, 2N for the reference's forward.
    flops = 8 * params * tokens
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    out = {
        "params": params, "tokens": tokens, "step_s": seconds, "tokens_per_s": tokens / seconds,
        "mfu": flops / seconds / peak if peak else None, "mfu_flops_per_token": "8N (6N policy + 2N reference)",
        "init_s": stats["init_s"], "loss": metrics["loss"], "kl": metrics.get("kl"),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }  # fmt: skip
    assert math.isfinite(metrics["loss"]), out
    return out, learner


def nccl_channel(learner: Any) -> dict:
    """The NCCL weight channel at world size 1: rank 0 sends the 1.5B learner's real weights in 256 MB buckets
    (synchronised per bucket), then a receiver pass rebuilds every tensor with its shape."""
    import torch

    from openrs_ray.broadcast.channel import WeightChannel, serve_store

    port = _free_port()
    store = serve_store(port, 120)
    bucket = 256 * 2**20
    learner.open_channel("127.0.0.1", port, 1, 1)
    assert learner._channel.backend == "nccl" and learner._channel.device.type == "cuda"
    t0 = time.perf_counter()
    sent, error = learner.send_weights(bucket)
    assert error is None, error
    send_s = time.perf_counter() - t0
    specs = learner.weight_specs()
    learner.close_channel()
    receiver = WeightChannel("127.0.0.1", port, 0, 1, 2, 120, "cuda:0", "nccl")
    t0 = time.perf_counter()
    received = [(n, tuple(t.shape)) for n, t in receiver.receive(specs, bucket)]
    recv_s = time.perf_counter() - t0
    receiver.close()
    assert received == [(n, s) for n, s, _ in specs] and sent > 0
    del store
    torch.cuda.synchronize()
    gbps = sent / send_s / 1e9
    return {"bytes": sent, "send_s": send_s, "send_gbps": gbps, "receive_s": recv_s, "tensors": len(specs)}


def gpu_tests() -> dict:
    """The `gpu`-marked tests that need no Ray (the LearnerGroup one needs Ray, absent here)."""
    cmd = [sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-q", "-k", "not learner_group"]
    cmd += ["-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    tail = proc.stdout.strip().splitlines()[-1:] or [proc.stderr.strip()[-300:]]
    assert proc.returncode == 0, tail
    return {"returncode": proc.returncode, "summary": tail[0]}


def main(out_dir: Path) -> int:
    import torch

    if not torch.cuda.is_available():
        print("device_check: no CUDA GPU visible (torch.cuda.is_available() is False); run it on a GPU machine")
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda, "parts": {},
    }  # fmt: skip
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="device-check-"))

    def part(name: str, fn: Callable, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            result = fn(*args)
            value, extra = result if isinstance(result, tuple) else (result, None)
            summary["parts"][name] = {"ok": True, "seconds": time.perf_counter() - t0, **value}
        except Exception as err:  # noqa: BLE001 - record and go on: one JSON summary of every part
            summary["parts"][name] = {"ok": False, "seconds": time.perf_counter() - t0, "error": repr(err)[:2000],
                                      "traceback": traceback.format_exc()[-4000:]}  # fmt: skip
            extra = None
        print(f"device_check: {name}: {'ok' if summary['parts'][name]['ok'] else 'FAILED'}", flush=True)
        (out_dir / "device_check.json").write_text(json.dumps(summary, indent=2))
        return extra

    part("learner_matrix", learner_matrix, tmp)
    part("chunked_logprobs", chunked_logprobs)
    learner = part("step_1_5b", step_1_5b, tmp)
    if learner is not None:
        part("nccl_channel", nccl_channel, learner)
        learner.shutdown()
        _release(learner)
    part("gpu_tests", gpu_tests)
    summary["total_s"] = time.perf_counter() - t_start
    summary["ok"] = all(p["ok"] for p in summary["parts"].values())
    (out_dir / "device_check.json").write_text(json.dumps(summary, indent=2))
    verdict = "ok" if summary["ok"] else "FAILED"
    print(f"device_check: {verdict} in {summary['total_s']:.0f}s -> {out_dir}/device_check.json")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("DS_ACCELERATOR", "cuda")
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/device_check")))

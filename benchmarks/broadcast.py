"""Weight-transfer bandwidth between two Ray actors on one machine, for a Qwen2.5-0.5B-shaped fp32 state dict.

    python benchmarks/broadcast.py [--layers 24] [--bucket-mb 256] [--runs 3] [--object-store-gb 3]
                                   [--out benchmarks/results/broadcast.json]

The state dict is built from Qwen2.5-0.5B's Qwen2Config (hidden 896, 24 layers, 14 heads, 2 kv heads,
intermediate 4864, vocab 151936, tied embeddings: 494M parameters, ~1.98 GB fp32) as named random tensors,
without instantiating a model; --layers shrinks it. Backends, each one warm-up then `--runs` timed runs:
(a) object store: the sender ray.put's buckets of (name, tensor) lists (plan_buckets, --bucket-mb), the
    receiver ray.get's each bucket and copies every tensor into a preallocated one (what a vLLM engine does);
    a run is the sender's puts plus the receiver's gets+copies, and the refs are dropped after each run.
(b) collective: the sender serves the TCPStore (serve_store), both join a gloo WeightChannel, then
    send/receive in the same buckets; the receiver copies each yielded tensor into a preallocated one.
(c) memcpy: torch dst.copy_(src) of a 1 GB fp32 tensor in this process, best of 5 (the machine's limit).
GB/s = state-dict bytes (1e9) / seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import ray
import torch

REPO = Path(__file__).resolve().parents[1]


def qwen05b_specs(layers: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of Qwen2.5-0.5B's parameters (as named by transformers) with `layers` layers."""
    from transformers import Qwen2Config

    c = Qwen2Config(
        hidden_size=896, num_hidden_layers=layers, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
    )  # fmt: skip
    h, inter, head = c.hidden_size, c.intermediate_size, c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head
    specs = [("model.embed_tokens.weight", (c.vocab_size, h))]
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        specs += [
            (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.q_proj.bias", (h,)),
            (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.k_proj.bias", (kv,)),
            (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.v_proj.bias", (kv,)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "mlp.gate_proj.weight", (inter, h)), (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
            (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
        ]  # fmt: skip
    specs.append(("model.norm.weight", (h,)))
    if not c.tie_word_embeddings:
        specs.append(("lm_head.weight", (c.vocab_size, h)))
    return [(n, s, "float32") for n, s in specs]


class Sender:
    """Holds the random state dict; publishes it through the object store or the weight channel."""

    def __init__(self, specs: list, bucket_bytes: int, seed: int = 0) -> None:
        from openrs_ray.broadcast.channel import plan_buckets

        gen = torch.Generator().manual_seed(seed)
        self.specs, self.bucket_bytes = specs, bucket_bytes
        self.tensors = [torch.randn(shape, generator=gen) for _, shape, _ in specs]
        self.buckets = plan_buckets(specs, bucket_bytes)

    def put_buckets(self) -> list:
        """One ObjectRef per bucket of (name, tensor) pairs (nested in a list: the refs are not fetched)."""
        return [ray.put([(self.specs[i][0], self.tensors[i]) for i in b]) for b in self.buckets]

    def serve(self, timeout_s: float) -> tuple[str, int]:
        import socket

        from openrs_ray.broadcast.channel import serve_store

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._store = serve_store(port, timeout_s)
        return "127.0.0.1", port

    def join(self, host: str, port: int, timeout_s: float) -> int:
        from openrs_ray.broadcast.channel import WeightChannel

        self.channel = WeightChannel(host, port, 0, 2, epoch=1, timeout_s=timeout_s)
        return 0

    def send(self) -> int:
        sent, error = self.channel.send(iter(self.tensors), self.specs, self.bucket_bytes)
        assert error is None, error
        return sent


class Receiver:
    """Preallocated destination tensors, filled from object-store buckets or the weight channel."""

    def __init__(self, specs: list, bucket_bytes: int) -> None:
        self.specs, self.bucket_bytes = specs, bucket_bytes
        self.dst = {name: torch.zeros(shape) for name, shape, _ in specs}

    def load(self, refs: list) -> float:
        """ray.get each bucket and copy it in; returns a checksum (sum of first elements)."""
        for ref in refs:
            for name, tensor in ray.get(ref):
                self.dst[name].copy_(tensor)
        return self._checksum()

    def join(self, host: str, port: int, timeout_s: float) -> int:
        from openrs_ray.broadcast.channel import WeightChannel

        self.channel = WeightChannel(host, port, 1, 2, epoch=1, timeout_s=timeout_s)
        return 1

    def receive(self) -> float:
        for name, tensor in self.channel.receive(self.specs, self.bucket_bytes):
            self.dst[name].copy_(tensor)
        return self._checksum()

    def clear(self) -> None:
        for t in self.dst.values():
            t.zero_()

    def _checksum(self) -> float:
        return float(sum(t.reshape(-1)[0].item() for t in self.dst.values()))


def timed(fn, runs: int, setup=None) -> list[float]:
    """Seconds of `runs` calls of fn after one warm-up; `setup` runs before each call, outside the clock."""
    out = []
    for i in range(runs + 1):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        if i:
            out.append(time.perf_counter() - t0)
    return out


def row(backend: str, nbytes: int, secs: list[float], **extra) -> dict:
    best, med = min(secs), statistics.median(secs)
    return {
        "backend": backend, "bytes": nbytes, "seconds": secs, "best_s": best, "median_s": med,
        "best_gbps": nbytes / best / 1e9, "median_gbps": nbytes / med / 1e9, **extra,
    }  # fmt: skip


def bench_memcpy(gb: float = 1.0, repeats: int = 5) -> dict:
    src = torch.randn(int(gb * 1e9) // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages
    secs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        secs.append(time.perf_counter() - t0)
    assert torch.equal(dst[:1000], src[:1000])
    return row("memcpy (torch copy_, 1 GB)", src.numel() * 4, secs, torch_threads=torch.get_num_threads())


def bench_actors(specs: list, nbytes: int, args: argparse.Namespace) -> list[dict]:
    bucket_bytes = args.bucket_mb * 2**20
    opts = {"num_cpus": 1}
    sender = ray.remote(Sender).options(**opts).remote(specs, bucket_bytes)
    receiver = ray.remote(Receiver).options(**opts).remote(specs, bucket_bytes)
    rows = []
    try:
        expected = ray.get(sender.__ray_call__.remote(lambda s: float(sum(t.reshape(-1)[0].item() for t in s.tensors))))
        n_buckets = ray.get(sender.__ray_call__.remote(lambda s: len(s.buckets)))

        def clear() -> None:
            ray.get(receiver.clear.remote())

        def object_store() -> None:
            t0 = time.perf_counter()
            refs = ray.get(sender.put_buckets.remote())
            put_s.append(time.perf_counter() - t0)
            assert ray.get(receiver.load.remote(refs)) == expected, "object store: receiver got other weights"
            del refs  # the buckets are freed before the next run

        put_s: list[float] = []
        secs = timed(object_store, args.runs, clear)
        rows.append(row("object store (put + get/copy)", nbytes, secs, buckets=n_buckets, put_s=put_s[1:]))

        host, port = ray.get(sender.serve.remote(args.timeout))
        ray.get([sender.join.remote(host, port, args.timeout), receiver.join.remote(host, port, args.timeout)])

        def collective() -> None:
            recv = receiver.receive.remote()
            sent = ray.get(sender.send.remote())
            assert sent == nbytes and ray.get(recv) == expected, "collective: receiver got other weights"

        secs = timed(collective, args.runs, clear)
        rows.append(row("collective (gloo WeightChannel)", nbytes, secs, buckets=n_buckets))
    finally:
        ray.kill(sender)
        ray.kill(receiver)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24, help="decoder layers (24 = Qwen2.5-0.5B)")
    parser.add_argument("--bucket-mb", type=int, default=256, help="bucket size in MiB (broadcast.bucket_size_mb)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per backend after one warm-up")
    parser.add_argument("--object-store-gb", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="channel timeout (s)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/broadcast.json"))
    args = parser.parse_args()

    specs = qwen05b_specs(args.layers)
    numel = sum(torch.Size(s).numel() for _, s, _ in specs)
    nbytes = numel * 4
    rows = [bench_memcpy()]
    ray.init(
        num_cpus=4, object_store_memory=int(args.object_store_gb * 2**30), include_dashboard=False, log_to_driver=False
    )
    try:
        rows = bench_actors(specs, nbytes, args) + rows
    finally:
        ray.shutdown()

    print(f"\nWeight transfer: Qwen2.5-0.5B-shaped fp32 state dict, {args.layers} layers, {len(specs)} tensors, "
          f"{numel / 1e6:.0f}M params = {nbytes / 1e9:.2f} GB; buckets of {args.bucket_mb} MiB; "
          f"{os.cpu_count()} CPUs; warm-up + {args.runs} runs")  # fmt: skip
    print(f"{'backend':<34}{'best s':>8}{'median s':>10}{'best GB/s':>11}{'median GB/s':>13}")
    for r in rows:
        print(f"{r['backend']:<34}{r['best_s']:>8.2f}{r['median_s']:>10.2f}{r['best_gbps']:>11.2f}"
              f"{r['median_gbps']:>13.2f}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "ray": ray.__version__, "params": numel, "tensors": len(specs), "args": vars(args),
    }  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

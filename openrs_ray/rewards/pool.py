"""VerifierPool: CPU Ray actors that score whole groups of rollouts.

Each actor scores a group's samples in a killable child process (rewards/sandbox.py), so no sample
takes longer than `rewards.sample_timeout_s` and no scoring failure reaches the run: it is a zero
reward and a counted metric. A verifier actor that dies is restarted by Ray (`max_restarts`) and its
unfinished calls are retried there (`max_task_retries`), so the ObjectRefs the buffer holds stay valid.
Ray re-creates it on any node with room, also when its node died; when no node has room (the role's node is
gone) Ray would wait forever, so `check` (before a step) and every wait on the actors (`wait`, during a step)
raise VerifiersLost instead, and the run stops with a checkpoint rather than scoring nothing.
"""

from __future__ import annotations

import time
import uuid

import ray

from openrs_ray.cluster import actor_request, role_resources
from openrs_ray.config import RunConfig
from openrs_ray.errors import VerifiersLost
from openrs_ray.recovery import can_place, dead_nodes
from openrs_ray.rewards.base import GroupScorer, Verifiers
from openrs_ray.rewards.registry import RewardContext
from openrs_ray.rewards.sandbox import SampleScorer
from openrs_ray.types import Prompt, Rollout, ScoredGroup

POLL_S = 1.0  # a wait on the verifiers looks this often whether their node died (one control-store query)


class Verifier(GroupScorer):
    """The reward functions scoring one group at a time. Runs inside a Ray actor."""

    def __init__(self, cfg: RunConfig) -> None:
        rc = cfg.rewards
        weights = {f.name: f.weight for f in rc.functions}
        weights.setdefault("accuracy", 0.0)  # always measured: the run's headline metric
        self.names = list(weights)
        self.max_len = rc.cosine_max_len or cfg.generation.max_completion_length
        self.unit = rc.cosine_length_unit
        self.options = {"mode": rc.accuracy_mode, "unparsable_gold": rc.unparsable_gold, "clamp": rc.cosine_clamp}
        custom = {f.name: f.function for f in rc.functions if f.function}  # user rewards (rewards/custom.py)
        self.scorer = SampleScorer(weights, rc.sample_timeout_s, custom)
        self.incarnation = uuid.uuid4().hex  # changes when Ray restarts this actor

    def whoami(self) -> str:
        """This actor process's incarnation id (the pool counts restarts with it)."""
        return self.incarnation

    def node_id(self) -> str:
        """The Ray node this actor runs on (the pool notices its death through Ray's node table)."""
        return ray.get_runtime_context().get_node_id()

    def _context(self, prompt: Prompt, r: Rollout) -> RewardContext:
        length = len(r.completion_ids) if self.unit == "tokens" else len(r.completion_text)
        return RewardContext(
            r.completion_text, prompt.answer, length, self.max_len, prompt=prompt.text,
            token_count=len(r.completion_ids), columns=prompt.columns, **self.options,
        )  # fmt: skip

    def score(self, prompt: Prompt, rollouts: list[Rollout]) -> ScoredGroup:
        """Weighted reward per rollout plus each component; an unparsable gold drops the group."""
        outcomes = self.scorer.score([self._context(prompt, r) for r in rollouts])
        version = min(r.weight_version for r in rollouts)
        if any(o.status == "unparsable" for o in outcomes):
            return ScoredGroup(prompt, rollouts, [0.0] * len(rollouts), weight_version=version, dropped=True)
        components = {n: [o.components.get(n, 0.0) for o in outcomes] for n in self.names}
        return ScoredGroup(
            prompt, rollouts, [o.total for o in outcomes], components, version,
            verify_errors=sum(o.status == "error" for o in outcomes),
            verify_timeouts=sum(o.status == "timeout" for o in outcomes),
        )  # fmt: skip

    def shutdown(self) -> None:
        """Stop the scoring child process."""
        self.scorer.close()


class VerifierPool(Verifiers):
    """`rewards.num_workers` Verifier actors; groups go to the actor with the fewest in flight."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self._actor_cls = ray.remote(Verifier).options(
            num_cpus=cfg.cluster.verifier_cpus,
            resources=role_resources(cfg.cluster, "verifier"),  # {} unless cluster.role_resources
            max_restarts=-1,
            max_task_retries=-1,
        )
        self.actors = [self._actor_cls.remote(cfg) for _ in range(cfg.rewards.num_workers)]
        self._in_flight: list[list[ray.ObjectRef]] = [[] for _ in self.actors]
        self._incarnations: list[str | None] = [None] * len(self.actors)
        self._nodes: list[str | None] = [None] * len(self.actors)  # where each actor last answered from
        self._need = actor_request(cfg.cluster, "verifier")
        self.restarts = 0

    def _least_loaded(self) -> int:
        for refs in self._in_flight:  # forget finished calls
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
            refs[:] = [r for r in refs if r not in done]
        return min(range(len(self.actors)), key=lambda i: len(self._in_flight[i]))

    def queue_depth(self) -> int:
        """Groups submitted and not yet scored."""
        self._least_loaded()  # forgets finished calls
        return sum(len(refs) for refs in self._in_flight)

    def score(self, groups: list[tuple[Prompt, list[Rollout]]]) -> list[ray.ObjectRef]:
        """Submit groups for scoring; returns one ObjectRef[ScoredGroup] per group, without waiting."""
        refs = []
        for prompt, rollouts in groups:
            i = self._least_loaded()
            ref = self.actors[i].score.remote(prompt, rollouts)
            self._in_flight[i].append(ref)
            refs.append(ref)
        return refs

    def count_restarts(self) -> int:
        """Restarts seen so far (an actor answering with a new incarnation id was restarted by Ray). Verifiers lost
        for good are not waited for: the next `check` stops the run, after this step is recorded."""
        refs = [a.whoami.remote() for a in self.actors]
        if self._await(refs, self.cfg.rewards.timeout_s):
            return self.restarts
        ids = ray.get(refs, timeout=POLL_S)  # answered, or rewards.timeout_s passed (GetTimeoutError)
        for i, new in enumerate(ids):
            if self._incarnations[i] is not None and new != self._incarnations[i]:
                self.restarts += 1
            self._incarnations[i] = new
        return self.restarts

    def wait(self, refs: list[ray.ObjectRef], timeout_s: float) -> None:
        """Wait until `refs` (scores) are ready or `timeout_s` passes; VerifiersLost as soon as verifiers died
        with their node and no node can place them again (their calls would never finish)."""
        lost = self._await(refs, timeout_s)
        if lost:
            raise self._lost(lost)

    def check(self) -> None:
        """Raise VerifiersLost when a verifier does not answer and no node can place it again (its node died).

        Asked between steps, when the actors are idle: an answer takes milliseconds. One that does not come
        within cluster.placement_timeout_s is an actor Ray is re-creating (or never placed); if no node can hold
        a verifier, that re-creation would wait forever.
        """
        wait = self.cfg.cluster.placement_timeout_s
        refs = [a.node_id.remote() for a in self.actors]
        ready, silent = ray.wait(refs, num_returns=len(refs), timeout=wait)
        for i, ref in enumerate(refs):
            if ref in ready:
                self._nodes[i] = ray.get(ref, timeout=wait)
        if not silent:
            return
        if can_place(self._need, wait):
            ray.wait(silent, num_returns=len(silent), timeout=self.cfg.rewards.timeout_s)  # being re-created
            return
        raise self._lost([i for i, r in enumerate(refs) if r in silent])

    def _await(self, refs: list[ray.ObjectRef], timeout_s: float) -> list[int]:
        """Wait for calls to the actors at most `timeout_s`; returns early, with their indices, when verifiers are
        found on a dead node and no node can place them again. [] when the calls finished or the time ran out."""
        deadline, pending = time.monotonic() + timeout_s, list(refs)
        while pending and (left := deadline - time.monotonic()) > 0:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=min(left, POLL_S))
            dead = dead_nodes({n for n in self._nodes if n is not None}) if pending else set()
            lost = [i for i, n in enumerate(self._nodes) if n in dead]
            if lost and not can_place(self._need, self.cfg.cluster.placement_timeout_s):
                return lost
            for i in lost:  # Ray is re-creating them elsewhere; `check` records where they answer from next
                self._nodes[i] = None
        return []

    def _lost(self, indices: list[int]) -> VerifiersLost:
        wait = self.cfg.cluster.placement_timeout_s
        return VerifiersLost(
            f"rewards: verifier(s) {indices} were lost and no node can place one ({self._need}) within "
            f"cluster.placement_timeout_s={wait:g}s"
        )

    def shutdown(self) -> None:
        """Stop the scoring children, then end the actors."""
        try:  # verifiers lost for good are not waited for
            refs = [a.shutdown.remote() for a in self.actors]
            self._await(refs, 30)
        except Exception:  # noqa: BLE001 - a dead actor must not stop the others' cleanup
            pass
        for a in self.actors:
            ray.kill(a, no_restart=True)

"""GeneratorGroup: the vLLM generator actors, addressed as one, growing and shrinking while the run goes on.

A new engine loads the checkpoint, then the newest published weights, and only then serves. An engine
that dies mid-step is replaced the same way and its prompts go to the engines still alive, so every
prompt of a step is generated exactly once. When the replacement cannot be placed (its node is gone and no
other node has room; recovery.can_place answers within cluster.placement_timeout_s) the engine is dropped
and the run goes on with the survivors; the group grows back to its target when room appears again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from openrs_ray.cluster import actor_env, actor_request, role_resources
from openrs_ray.config import RunConfig
from openrs_ray.errors import RoleLost
from openrs_ray.generators.base import ChannelReceivers, Generator, Generators
from openrs_ray.plugins import load_backend
from openrs_ray.recovery import can_place, dead_nodes
from openrs_ray.types import Prompt, Rollout


@dataclass(eq=False)  # identity: a replaced engine is another object even with the same id
class _Engine:
    engine_id: int
    actor: ray.actor.ActorHandle
    incarnation: int  # unique per spawned actor: a replacement keeps the id, never the incarnation
    in_flight: int = 0  # prompts dispatched and not yet returned
    node_id: str | None = None  # the Ray node it runs on (known once it is up): was a loss a node's loss?


@dataclass
class _Call:
    engine: _Engine
    batch: list[int]  # positions in the submitted prompt list
    ref: ray.ObjectRef


@dataclass
class PendingGeneration:
    """Prompts dispatched to engines whose rollouts have not been collected yet."""

    prompts: list[Prompt]
    calls: list[_Call]
    sampling: dict[str, Any] | None = None  # per-call sampling overrides (evaluation); re-dispatch keeps them


class GeneratorGroup(Generators, ChannelReceivers):
    """Starts `generation.num_engines` engines of `generation.backend` and dispatches to the least loaded;
    engines report their version."""

    def __init__(self, cfg: RunConfig, version: int = 0, model_path: str | None = None) -> None:
        self.cfg = cfg
        # What engines load first (a checkpoint's HF weights on resume), holding weight version `version`.
        self._engine_cfg = cfg.model_copy(deep=True)
        if model_path is not None:
            self._engine_cfg.model.path = model_path
        self.base_version = version
        cc = cfg.cluster
        gpus = 1 if cc.use_gpu else 0  # one GPU per engine: no tensor parallelism (see vllm_actor)
        engine_cls = load_backend("generator", cfg.generation.backend, Generator)  # imported now, not with this module
        self._actor_cls = ray.remote(engine_cls).options(
            num_cpus=cc.generator_cpus,
            num_gpus=gpus,
            resources=role_resources(cc, "generator"),  # {} unless cluster.role_resources
            runtime_env={"env_vars": actor_env(cc, cc.generator_cpus, gpus)},
        )
        self._next_id = self._spawned = 0
        self._latest: tuple[list, int] | None = None  # newest (bucket refs, version): late joiners load it
        # Where late joiners get weights when the broadcast keeps no object-store copy (collective).
        self.catch_up: Callable[[], tuple[list, int]] | None = None
        self.restarts = 0  # engines lost (replaced, or dropped when no node could take them)
        self._request = actor_request(cc, "engine")  # what one engine needs on a single node
        self._lost_on: set[str] = set()  # nodes that hosted a lost engine (counted once Ray declares them dead)
        self.engines: list[_Engine] = []
        self.pending: list[tuple[_Engine, ray.ObjectRef]] = []  # started without waiting (autoscale), not serving
        self._starting = self._spawn(cfg.generation.num_engines)  # engines load while other roles start

    def _spawn(self, n: int, ids: list[int] | None = None) -> list[_Engine]:
        if ids is None:
            ids = list(range(self._next_id, self._next_id + n))
            self._next_id += n
        engines = []
        for i in ids:
            self._spawned += 1
            engines.append(_Engine(i, self._actor_cls.remote(i, self._engine_cfg, self.base_version), self._spawned))
        return engines

    def _wait(self, refs: list, engines: list[_Engine], what: str, timeout_s: float) -> list:
        """ray.get with a timeout whose error names the engines that did not answer."""
        self._wait_done(refs, engines, what, timeout_s)
        return ray.get(refs)

    def _bring_up(self, engines: list[_Engine]) -> None:
        """Wait for engines to start, then give them the newest weights before they serve."""
        self._wait([e.actor.ready.remote() for e in engines], engines, "start", self.cfg.generation.start_timeout_s)
        where = self._wait([e.actor.placement.remote() for e in engines], engines, "placement", 60)
        for e, w in zip(engines, where, strict=True):
            e.node_id = w["node_id"]
        # With a collective channel the object-store copy of a fallback reload goes stale: ask the source.
        latest = self._latest if self.catch_up is None else self.catch_up()
        if latest is not None and latest[1] > self.base_version:
            self._sync(engines, *latest)

    def wait_ready(self) -> None:
        """Block until the initial engines are up (bounded by generation.start_timeout_s)."""
        self._bring_up(self._starting)
        self.engines, self._starting = self._starting, []

    def add(self, n: int) -> list[int]:
        """Start `n` more engines; they serve only once they hold the current weight version."""
        new = self._spawn(n)
        try:
            self._bring_up(new)
        except Exception:
            for e in new:
                ray.kill(e.actor)
            raise
        self.engines += new
        return [e.engine_id for e in new]

    def grow(self, n: int) -> list[int]:
        """Start one more engine (of `n` wanted) when the cluster can place it now, e.g. a lost node came back.

        One per call: the next call (next step) probes again with this engine's resources taken.
        """
        if n < 1 or not can_place(self._request, self.cfg.cluster.placement_timeout_s, require_free=True):
            return []
        return self.add(1)

    def nodes_lost(self) -> int:
        """Nodes that hosted a lost engine and that Ray has since declared dead."""
        return len(dead_nodes({n for n in self._lost_on if n is not None}))

    def remove(self, n: int) -> list[int]:
        """Stop the `n` newest engines (at least one engine always stays)."""
        n = min(n, len(self.engines) - 1)
        gone, self.engines = self.engines[len(self.engines) - n :], self.engines[: len(self.engines) - n]
        for e in gone:
            ray.kill(e.actor)
        return [e.engine_id for e in gone]

    def start(self, n: int) -> None:
        """Spawn `n` engines without waiting (autoscaling): one the cluster cannot place yet stays pending, and
        the run goes on; `admit_ready` lets each serve once it is up and holds the newest weights."""
        self.pending += [(e, e.actor.ready.remote()) for e in self._spawn(n)]

    def admit_ready(self) -> list[int]:
        """Pending engines that finished starting get the newest weights and start serving; their ids."""
        if not self.pending:
            return []
        refs = [ref for _, ref in self.pending]
        up, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ready = [e for e, ref in self.pending if ref in up and self._started(e, ref)]
        self.pending = [(e, ref) for e, ref in self.pending if ref not in up]
        if not ready:
            return []
        self._bring_up(ready)
        self.engines += ready
        return [e.engine_id for e in ready]

    def _started(self, engine: _Engine, ref: ray.ObjectRef) -> bool:
        """False (and the actor ended) when the engine failed to start: the autoscaler may ask again."""
        try:
            ray.get(ref, timeout=10)
            return True
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
            print(f"generator engine {engine.engine_id} failed to start: {type(err).__name__}", flush=True)
            ray.kill(engine.actor)
            return False

    def cancel(self, n: int) -> int:
        """Stop up to `n` of the newest pending engines; returns how many were stopped."""
        gone = self.pending[len(self.pending) - n :] if n > 0 else []
        self.pending = self.pending[: len(self.pending) - len(gone)]
        for e, _ in gone:
            ray.kill(e.actor)
        return len(gone)

    def _assign(self, n: int) -> dict[int, list[int]]:
        """Positions 0..n-1 per engine index, each to the engine with the least work in flight."""
        plan: dict[int, list[int]] = {}
        load = [e.in_flight for e in self.engines]
        for p in range(n):
            i = min(range(len(load)), key=load.__getitem__)
            plan.setdefault(i, []).append(p)
            load[i] += 1
        return plan

    def _dispatch(self, prompts: list[Prompt], todo: list[int], sampling: dict[str, Any] | None = None) -> list[_Call]:
        calls = []
        for i, picks in self._assign(len(todo)).items():
            engine, batch = self.engines[i], [todo[p] for p in picks]
            engine.in_flight += len(batch)
            calls.append(_Call(engine, batch, engine.actor.generate.remote([prompts[j] for j in batch], sampling)))
        return calls

    def submit(self, prompts: list[Prompt], sampling: dict[str, Any] | None = None) -> PendingGeneration:
        """Dispatch prompts to the least-loaded engines and return at once (the asynchronous mode).

        `sampling` overrides the run's sampling for these prompts (n, temperature, top_p, max_tokens, seed).
        """
        return PendingGeneration(prompts, self._dispatch(prompts, list(range(len(prompts))), sampling), sampling)

    def collect(self, pending: PendingGeneration) -> list[list[Rollout]]:
        """Rollouts per prompt, in prompt order. A dead engine is replaced and its prompts re-dispatched."""
        out: list[list[Rollout] | None] = [None] * len(pending.prompts)
        calls = pending.calls
        for _ in range(len(self.engines) + 2):  # each retry follows the loss of an engine
            failed = self._gather(calls, out)
            if not failed:
                return out  # type: ignore[return-value]
            calls = self._dispatch(pending.prompts, failed, pending.sampling)
        raise RuntimeError(f"prompts {failed} could not be generated: engines keep dying")

    def generate(self, prompts: list[Prompt], sampling: dict[str, Any] | None = None) -> list[list[Rollout]]:
        """Synchronous generation: submit and collect (with optional per-call sampling overrides)."""
        return self.collect(self.submit(prompts, sampling))

    def _gather(self, calls: list[_Call], out: list) -> list[int]:
        timeout = self.cfg.generation.timeout_s
        _, late = ray.wait([c.ref for c in calls], num_returns=len(calls), timeout=timeout)
        failed: list[int] = []
        for call in calls:
            call.engine.in_flight -= len(call.batch)
            if call.ref in late:
                raise TimeoutError(
                    f"generator engine {call.engine.engine_id} did not finish generate within {timeout}s"
                )
            try:
                for j, group in zip(call.batch, ray.get(call.ref), strict=True):
                    out[j] = group
            except ray.exceptions.RayActorError:
                failed += call.batch
                self._replace(call.engine)
        return failed

    def _replace(self, dead: _Engine) -> None:
        """A new actor with the dead engine's id, synced to the newest weights, takes its place; when none
        can be placed the engine is dropped and its work goes to the survivors."""
        if dead not in self.engines:  # already replaced while collecting an earlier batch
            return
        self.restarts += 1
        ray.kill(dead.actor)  # an unreachable engine may still be running: never two with one id
        if dead.node_id is not None:
            self._lost_on.add(dead.node_id)
        wait = self.cfg.cluster.placement_timeout_s
        if not can_place(self._request, wait):
            self.engines.remove(dead)
            if not self.engines:
                raise RoleLost(
                    f"generation: every engine was lost and no node can place one ({self._request}) within "
                    f"cluster.placement_timeout_s={wait:g}s"
                )
            print(f"openrs-ray: warning: generator engine {dead.engine_id} was lost and no node can place a "
                  f"replacement; going on with {len(self.engines)} engine(s)", flush=True)  # fmt: skip
            return
        (fresh,) = self._spawn(1, ids=[dead.engine_id])
        self._bring_up([fresh])
        self.engines[self.engines.index(dead)] = fresh

    def _sync(self, engines: list[_Engine], bucket_refs: list, version: int) -> list[dict[str, float]]:
        timeout = self.cfg.broadcast.timeout_s
        refs = [e.actor.load_weights.remote(bucket_refs, version, timeout) for e in engines]
        return self._wait(refs, engines, f"loading weight version {version}", timeout)

    def load_weights(self, bucket_refs: list, version: int) -> list[dict[str, float]]:
        """Every engine loads `version` from the object store; fails loudly naming a late engine.

        The refs are kept (one copy of the weights in the object store) so that engines added or
        restarted later catch up to this version before serving.
        """
        self._latest = (bucket_refs, version) if self.catch_up is None else None
        engines = list(self.engines)
        timeout = self.cfg.broadcast.timeout_s
        refs = [e.actor.load_weights.remote(bucket_refs, version, timeout) for e in engines]
        self._wait_done(refs, engines, f"loading weight version {version}", timeout)
        out, lost = [], []
        for e, ref in zip(engines, refs, strict=True):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError:  # died with its node mid-sync: replaced (it catches up) or dropped
                lost.append(e)
        for e in lost:
            self._replace(e)
        return out

    def _wait_done(self, refs: list, engines: list[_Engine], what: str, timeout_s: float) -> None:
        """Wait until every ref is done (a value or an error); a timeout names the engines that did not answer."""
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if pending:
            late = [e.engine_id for e, r in zip(engines, refs, strict=True) if r in pending]
            raise TimeoutError(f"generator engine(s) {late} did not finish {what} within {timeout_s}s")

    def open_channel(
        self, host: str, port: int, world_size: int, epoch: int, timeout_s: float, backend: str = "gloo"
    ) -> list:
        """Refs of every engine joining the weight channel as ranks 1..n (each leaves its previous group)."""
        return [
            e.actor.open_channel.remote(host, port, rank, world_size, epoch, timeout_s, backend)
            for rank, e in enumerate(self.engines, start=1)
        ]

    def receive_weights(self, specs: list, bucket_bytes: int, version: int) -> list:
        """Refs of every engine loading `version` from the channel."""
        return [e.actor.receive_weights.remote(specs, bucket_bytes, version) for e in self.engines]

    def wait_engines(self, refs: list, what: str, timeout_s: float) -> list:
        """Wait for one call per engine (in engine order); a timeout names the engines that did not answer."""
        return self._wait(refs, self.engines, what, timeout_s)

    def replace_lost(self) -> int:
        """Replace (or drop) engines whose actor has died; how many. Asked before a collective broadcast: a
        dead member would stall the sender until the channel's timeout. A call to a dead actor fails at once,
        so a short wait suffices; an engine busy generating (asynchronous mode) does not answer and is alive."""
        engines = list(self.engines)
        refs = [e.actor.ready.remote() for e in engines]
        ray.wait(refs, num_returns=len(refs), timeout=0.2 if any(e.in_flight for e in engines) else 10.0)
        lost = []
        for e, ref in zip(engines, refs, strict=True):
            try:
                ray.get(ref, timeout=0)
            except ray.exceptions.RayActorError:
                lost.append(e)
            except ray.exceptions.GetTimeoutError:
                pass
        for e in lost:
            self._replace(e)
        return len(lost)

    def channel_failures(self, refs: list, what: str, timeout_s: float) -> list[str]:
        """Wait for one channel call per engine (in engine order); a line per engine that died or whose call
        failed (a member lost mid-broadcast fails the collective for the others too). A timeout still raises,
        naming the late engines. The dead are replaced or dropped by the object-store reload that follows."""
        engines = list(self.engines)
        self._wait_done(refs, engines, what, timeout_s)
        failed = []
        for e, ref in zip(engines, refs, strict=True):
            try:
                ray.get(ref, timeout=10)
            except ray.exceptions.RayError as err:
                failed.append(f"engine {e.engine_id}: {type(err).__name__}")
        return failed

    def _report(self) -> list[dict[str, float]]:
        refs = [e.actor.ready.remote() for e in self.engines]
        return self._wait(refs, self.engines, "ready", self.cfg.generation.timeout_s)

    def reported_versions(self) -> list[int]:
        """The weight version each engine says it serves (asked, not remembered)."""
        return [int(r["version"]) for r in self._report()]

    def placement(self) -> list[dict]:
        """Node and GPU of each engine, in engine order."""
        refs = [e.actor.placement.remote() for e in self.engines]
        return self._wait(refs, self.engines, "placement", self.cfg.generation.timeout_s)

    def busy_seconds(self) -> float:
        """Seconds the current engines have spent generating, summed."""
        return sum(r["busy_s"] for r in self._report())

    def prompt_logprobs(self, engine: int, token_ids: list[int]) -> list[float]:
        """Engine number `engine`'s logprob of each token after the first (temperature 1)."""
        e = self.engines[engine]
        return self._wait([e.actor.prompt_logprobs.remote(token_ids)], [e], "prompt_logprobs", 600)[0]

    def topk_logprobs(self, rows: list[list[int]], starts: list[int], k: int) -> list[tuple[list, list]]:
        """Top-k (ids, logprobs) per position from `starts[i]` on, rows split evenly over the engines."""
        n = len(self.engines)
        size = -(-len(rows) // n)
        parts = [(e, slice(i * size, (i + 1) * size)) for i, e in enumerate(self.engines) if i * size < len(rows)]
        refs = [e.actor.topk_logprobs.remote(rows[s], starts[s], k) for e, s in parts]
        out = self._wait(refs, [e for e, _ in parts], "topk_logprobs", self.cfg.generation.timeout_s)
        return [row for part in out for row in part]

    def shutdown(self) -> None:
        """End the engines (their vLLM engine cores go with the actor processes)."""
        for e in self.engines + self._starting + [e for e, _ in self.pending]:
            ray.kill(e.actor)

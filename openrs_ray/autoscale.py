"""Generator autoscaling: between steps, the engine count follows how long learners waited for rollouts and
how much of their time the engines spent generating (generation.autoscale).

- `Controller` is pure: measurements in, (target, reason) out, within bounds, with a cool-down after each
  change and a dead band between the grow and shrink thresholds so the count does not oscillate.
- `BusyProbe` reads the engines' busy seconds without waiting on them.
- `Autoscaler` is the orchestrator's hook: it admits engines that finished starting, asks the controller,
  and applies the target. An added engine is started without waiting: on a cluster with an autoscaler
  (KubeRay) an engine no node can hold yet is a resource request the autoscaler answers, and the run goes
  on with the engines it has until the new one is up.

Why hand-written: Ray Serve's autoscaler scales deployments on request queues, and Ray's cluster
autoscaler adds nodes for pending work; neither sizes a pool of stateful actors that must receive the
newest weights before they serve, against a learner's wait.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from statistics import fmean
from typing import Any

import ray

from openrs_ray.config.autoscale import AutoscaleConfig


@dataclass(frozen=True)
class Observation:
    """One step as the controller sees it."""

    step_s: float  # wall seconds of the step without its scale phase (engine start-up is not load)
    wait_s: float  # seconds the learners waited for rollouts (the generate and refill phases)
    busy_fraction: float | None  # engines' generating seconds / (engines x wall seconds); None: not read yet

    @property
    def wait_fraction(self) -> float:
        return self.wait_s / self.step_s if self.step_s > 0 else 0.0


@dataclass(frozen=True)
class Decision:
    """The engine count wanted for the next step and why."""

    target: int
    reason: str  # grow_learners_waiting | shrink_engines_idle | shrink_no_gain | hold_* | cooldown | manual | ...


class Controller:
    """Chooses the engine count from measured steps; one `decide` call per step, before the step runs."""

    def __init__(self, cfg: AutoscaleConfig) -> None:
        self.cfg = cfg
        self.cooldown = 0  # decisions left that hold the count after a change
        self.window: deque[Observation] = deque(maxlen=cfg.window_steps)
        self.trial: float | None = None  # step seconds before the last grow, until the grow proved itself
        self.ceiling = cfg.max_engines  # lowered when a grow did not make steps faster

    def _change(self, target: int, reason: str) -> Decision:
        self.cooldown = self.cfg.cooldown_steps
        self.window.clear()  # measurements of the old count say nothing about the new one
        if reason != "grow_learners_waiting":
            self.trial = None
        return Decision(target, reason)

    def decide(self, engines: int, last: Observation | None, manual: int | None = None) -> Decision:
        """Target for the next step given the current count, the step just run and an operator's request.

        `manual` (set with `openrs-ray scale`) wins as long as it is set, even outside the bounds.
        """
        cfg = self.cfg
        if manual is not None:
            self.window.clear()
            self.trial = None
            return Decision(manual, "manual")
        if engines < cfg.min_engines:
            return self._change(cfg.min_engines, "min_engines")
        if engines > cfg.max_engines:
            return self._change(cfg.max_engines, "max_engines")
        if self.cooldown > 0:
            self.cooldown -= 1
            return Decision(engines, "cooldown")
        if last is None or last.busy_fraction is None:
            return Decision(engines, "hold_measuring")
        self.window.append(last)
        if len(self.window) < cfg.window_steps:
            return Decision(engines, "hold_measuring")
        return self._judge(engines)

    def _judge(self, engines: int) -> Decision:
        cfg = self.cfg
        step = fmean(o.step_s for o in self.window)
        wait = fmean(o.wait_fraction for o in self.window)
        busy = fmean(o.busy_fraction or 0.0 for o in self.window)
        trial, self.trial = self.trial, None
        if busy < cfg.shrink_busy_fraction and wait < cfg.grow_wait_fraction:
            # Idle engines first: the workload changed, so a pending grow's step time says nothing.
            self.ceiling = cfg.max_engines  # more engines may pay off again later
            if engines <= cfg.min_engines:
                return Decision(engines, "hold_at_min")
            return self._change(engines - 1, "shrink_engines_idle")
        if trial is not None and step > trial * (1 - cfg.min_gain) and engines > cfg.min_engines:
            self.ceiling = engines - 1
            return self._change(engines - 1, "shrink_no_gain")
        # Busy against the wait, not the step: in a synchronous step one engine is busy about as long as the
        # learners wait, so a bar on its own would never grow a workload whose generation is under half the step.
        if wait >= cfg.grow_wait_fraction and busy >= cfg.grow_busy_fraction * wait:
            if engines >= cfg.max_engines:
                return Decision(engines, "hold_at_max")
            if engines >= self.ceiling:
                return Decision(engines, "hold_no_gain_above")
            self.trial = step
            return self._change(engines + 1, "grow_learners_waiting")
        return Decision(engines, "hold_balanced")


def observation(metrics: dict[str, Any], busy_fraction: float | None) -> Observation:
    """The controller's view of one step's metrics (as written to metrics.jsonl)."""
    scale = metrics.get("time_scale_s", 0.0)
    wait = metrics.get("time_generate_s", 0.0) + metrics.get("time_refill_s", 0.0)
    return Observation(metrics["time_step_s"] - scale, wait, busy_fraction)


class BusyProbe:
    """Busy fraction of the engines between two reads, never waiting on them.

    An engine answers `ready` (which reports its busy seconds) only after the generate calls queued before
    it, so in asynchronous mode a read issued now may answer a few steps later. Each `read` issues a new
    probe and uses the newest earlier probe that every engine has answered.
    """

    def __init__(self) -> None:
        self.issued: deque[tuple[float, list[ray.ObjectRef]]] = deque()
        self.last: tuple[float, float] | None = None  # (time issued, busy seconds summed) of the newest answer

    def reset(self) -> None:
        """Forget every reading (the set of engines changed)."""
        self.issued.clear()
        self.last = None

    def _answered(self) -> tuple[float, float] | None:
        done = None
        while self.issued:
            at, refs = self.issued[0]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            if len(ready) < len(refs):
                break
            self.issued.popleft()
            done = (at, sum(r["busy_s"] for r in ray.get(refs, timeout=10)))
        return done

    def read(self, engines: list[Any], grace_s: float = 1.0) -> float | None:
        """Busy fraction since the previous answered probe; None until two probes have answered."""
        refs = [e.actor.ready.remote() for e in engines]
        self.issued.append((time.perf_counter(), refs))
        # Between synchronous steps no generation is queued: this probe answers at once and the reading
        # covers exactly the step just run. Asynchronous: an earlier probe is used, never a long wait.
        ray.wait(refs, num_returns=len(refs), timeout=grace_s)
        try:
            done = self._answered()
        except ray.exceptions.RayActorError:  # an engine died: its replacement starts a new count
            self.reset()
            done = None
        if done is None:
            return None
        last, self.last = self.last, done
        if last is None or done[0] <= last[0]:
            return None
        return min(1.0, (done[1] - last[1]) / (len(engines) * (done[0] - last[0])))


def probe_grace(engines: list[Any], grace_s: float = 1.0) -> float:
    """How long the busy probe may wait for its answer: none while generation is in flight (asynchronous
    mode), where the probe would queue behind it and the wait would be added to every step."""
    return 0.0 if any(getattr(e, "in_flight", 0) for e in engines) else grace_s


class Autoscaler:
    """The orchestrator's hook (one `step` call before each step): measure, decide, apply."""

    def __init__(
        self, cfg: AutoscaleConfig, generators: Any, engine_request: dict[str, float], start_timeout_s: float
    ) -> None:
        self.controller = Controller(cfg)
        self.generators = generators  # GeneratorGroup: engines, pending, start, admit_ready, cancel, remove
        self.engine_request = engine_request  # one engine's resources (cluster.actor_request)
        self.start_timeout_s = start_timeout_s  # an engine pending longer is given up (no node for it)
        self.started_at = 0.0
        self.probe = BusyProbe()
        self.observed: Observation | None = None  # what the last decision was made on (None: no measurement)
        # Steps whose metrics are not measurements: the first step warms the engines and learners up (vLLM's
        # first batches, DeepSpeed's first update; twice a steady step in benchmarks/scaling.py, and alone it would
        # grow any workload), and so does a new engine's first step (alone it would undo the grow as no gain).
        self.warming = 1

    def step(self, last_metrics: dict[str, Any] | None, manual: int | None) -> Decision:
        """Admit engines that came up, decide the target from the last step, and start or stop engines.

        While engines are starting the count holds: steps measured then say nothing about the new count.
        """
        g = self.generators
        if g.admit_ready():
            self.probe.reset()
            self.warming = 2  # the step before the new engine served, and the step that warms it up
        have = len(g.engines) + len(g.pending)
        self.observed = None
        if g.pending and manual is None:
            if time.monotonic() - self.started_at < self.start_timeout_s:
                return Decision(have, "hold_starting")
            self.controller.ceiling = len(g.engines)  # no node could take them: ask no more for now
            decision = Decision(len(g.engines), "cancel_unplaced")
        else:
            busy = self.probe.read(g.engines, probe_grace(g.engines))  # read even so: the next reading starts here
            if last_metrics and self.warming:
                self.warming, last_metrics = self.warming - 1, None
            last = self.observed = observation(last_metrics, busy) if last_metrics else None
            decision = self.controller.decide(have, last, manual)
        self.apply(decision.target)
        return decision

    def apply(self, target: int) -> None:
        """Start (without waiting) or stop engines until serving + starting engines make `target`."""
        g = self.generators
        have = len(g.engines) + len(g.pending)
        if target == have:
            return
        if target > have:
            g.start(target - have)
            self.started_at = time.monotonic()
        else:
            extra = have - target
            cancelled = g.cancel(extra)  # engines still starting go first: they serve nothing yet
            if extra - cancelled:
                g.remove(extra - cancelled)
                self.probe.reset()
                self.probe.read(g.engines)  # the first reading of the new set, answered by the next step
        request_engines(self.engine_request, target)


def request_engines(engine_request: dict[str, float], n: int) -> None:
    """Tell the cluster autoscaler (KubeRay) to hold `n` engines: a standing request that replaces the last
    one, so a shrink also lets it release nodes. Without an autoscaler the request is recorded and unused."""
    from ray.autoscaler.sdk import request_resources

    if not engine_request:  # an engine that reserves nothing (generator_cpus=0 on CPU) needs no node
        return
    request_resources(bundles=[dict(engine_request) for _ in range(n)])

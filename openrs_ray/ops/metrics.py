"""Every Prometheus metric of a run, defined in one place (names start with `openrs_`).

Why prometheus-client on the driver rather than `ray.util.metrics`: every role already reports to
the orchestrator each step (rollouts carry their engine id, learners return their metrics, the pool
and buffer return counters), so the driver can export all of it from one endpoint whose address the
operator chooses. Ray's metrics go through its per-node metrics agent, which an embedded Ray started
without the dashboard does not run; Ray's own system metrics stay available through its service
discovery file (deploy/prometheus/prometheus.yml scrapes both).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from openrs_ray.step_record import RolloutStats, StepRecord
from openrs_ray.types import ScoredGroup

PHASES = ("scale", "generate", "verify", "refill", "learn", "broadcast", "step")
_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class RunMetrics:
    """The run's registry and HTTP endpoint; `observe` records one step."""

    def __init__(self, port: int | None, host: str = "0.0.0.0") -> None:
        r = self.registry = CollectorRegistry()
        self.rollout_tokens = Counter("openrs_rollout_tokens", "Completion tokens sampled", ["engine"], registry=r)
        self.rollout_prompts = Counter("openrs_rollout_prompts", "Prompts completed", ["engine"], registry=r)
        self.generation_seconds = Histogram(
            "openrs_generation_seconds", "Generate phase per step", buckets=_SECONDS, registry=r
        )
        self.engine_version = Gauge(
            "openrs_engine_weight_version", "Weight version of rollouts per engine", ["engine"], registry=r
        )
        self.learner_version = Gauge("openrs_learner_weight_version", "Learner's newest weight version", registry=r)
        self.engines_up = Gauge("openrs_engines_up", "Generator engines serving", registry=r)
        self.generator_target = Gauge(
            "openrs_generator_target", "Engine count wanted (generation.autoscale or an operator)", registry=r
        )
        self.scale_decisions = Counter(
            "openrs_generator_scale_decisions", "Engine-count decisions, one per step", ["reason"], registry=r
        )
        self.sync_seconds = Histogram(
            "openrs_weight_sync_seconds", "Weight broadcast per version", buckets=_SECONDS, registry=r
        )
        self.sync_bytes = Counter("openrs_weight_sync_bytes", "Bytes broadcast to engines", registry=r)
        self.staleness = Histogram(
            "openrs_staleness", "Version lag of trained completions", buckets=(0, 1, 2, 3, 4, 8), registry=r
        )
        self.verifier_seconds = Histogram(
            "openrs_verifier_seconds", "Verify phase per step", buckets=_SECONDS, registry=r
        )
        self.verifier_queue = Gauge("openrs_verifier_queue_depth", "Groups waiting for a score", registry=r)
        self.verifier_timeouts = Counter("openrs_verifier_timeouts", "Samples past their scoring limit", registry=r)
        self.verifier_errors = Counter("openrs_verifier_errors", "Samples whose scoring failed", registry=r)
        self.reward = Gauge("openrs_reward", "Mean reward per component", ["component"], registry=r)
        self.reward_mean = Gauge("openrs_reward_mean", "Mean summed reward", registry=r)
        self.accuracy = Gauge("openrs_accuracy", "Mean accuracy", registry=r)
        self.completion_length = Gauge("openrs_completion_length", "Mean completion tokens", registry=r)
        self.truncation = Gauge("openrs_truncation_ratio", "Share of truncated completions", registry=r)
        self.language_drift = Gauge(
            "openrs_language_drift_ratio", "Share of completions leaving the prompt's script", registry=r
        )
        self.kl = Gauge("openrs_kl", "Mean k3 KL to the reference", registry=r)
        self.clip_ratio = Gauge("openrs_clip_ratio", "Share of clipped tokens", registry=r)
        self.learner_tps = Gauge("openrs_learner_tokens_per_second", "Completion tokens trained per second", registry=r)
        self.phase_seconds = Gauge(
            "openrs_step_phase_seconds", "Seconds per phase of the last step", ["phase"], registry=r
        )
        self.restarts = Counter("openrs_actor_restarts", "Actor restarts", ["role"], registry=r)
        self.steps = Counter("openrs_steps", "Steps completed", registry=r)
        self.nodes_lost = Counter("openrs_nodes_lost", "Nodes lost with a generator engine on them", registry=r)
        self._nodes_lost_seen = 0
        self.cost = Gauge("openrs_cost_dollars", "Run cost so far (cost.* prices)", registry=r)
        self.gpu_hours = Gauge("openrs_gpu_hours", "GPU-hours held so far", ["role"], registry=r)
        self.cpu_hours = Gauge("openrs_cpu_hours", "CPU-hours held so far", ["role"], registry=r)
        for phase in PHASES:
            self.phase_seconds.labels(phase=phase)
        for role in ("generator", "verifier"):
            self.restarts.labels(role=role)
        self._restarts_seen = {"generator": 0, "verifier": 0}
        self.server = start_http_server(port, addr=host, registry=r)[0] if port is not None else None
        self.port = self.server.server_port if self.server is not None else None

    def observe(self, m: StepRecord, groups: list[ScoredGroup], queue_depth: int) -> None:
        """Record one rl step's record and its trained groups."""
        for g in groups:
            for r in g.rollouts:
                self.rollout_tokens.labels(engine=str(r.engine_id)).inc(len(r.completion_ids))
                self.engine_version.labels(engine=str(r.engine_id)).set(r.weight_version)
            self.rollout_prompts.labels(engine=str(g.rollouts[0].engine_id)).inc()
        assert m.rollout is not None and m.flow is not None, "Prometheus observes rl steps"
        self.generation_seconds.observe(m.phases["generate"])
        self.verifier_seconds.observe(m.phases["verify"])
        self.learner_version.set(m.weight_version or 0)
        self.engines_up.set(m.flow.num_engines)
        self.generator_target.set(m.flow.generator_target)
        self.scale_decisions.labels(reason=m.flow.generator_scale_reason).inc()
        if "sync_s" in m.sync:
            self.sync_seconds.observe(m.sync["sync_s"])
            self.sync_bytes.inc(m.sync["sync_bytes"])
        for lag, count in m.staleness.get("staleness_hist", {}).items():
            for _ in range(count):
                self.staleness.observe(int(lag))
        self.verifier_queue.set(queue_depth)
        self.verifier_timeouts.inc(m.flow.verify_timeouts)
        self.verifier_errors.inc(m.flow.verify_errors)
        for name, value in m.rollout.components.items():
            self.reward.labels(component=name).set(value)
        self._gauges(m, m.rollout)
        for role, seen in (("generator", m.flow.generator_restarts), ("verifier", m.flow.verifier_restarts)):
            self.restarts.labels(role=role).inc(seen - self._restarts_seen[role])
            self._restarts_seen[role] = seen
        self.nodes_lost.inc(m.flow.nodes_lost - self._nodes_lost_seen)
        self._nodes_lost_seen = m.flow.nodes_lost
        self.steps.inc()

    def _gauges(self, m: StepRecord, rollout: RolloutStats) -> None:
        self.reward_mean.set(rollout.reward_mean)
        self.accuracy.set(rollout.accuracy_mean)
        self.completion_length.set(rollout.completion_length_mean)
        self.truncation.set(rollout.truncated_ratio)
        self.language_drift.set(rollout.language_drift_rate or 0.0)
        self.kl.set(m.learner.get("kl", 0.0))
        self.clip_ratio.set(m.learner.get("clip_ratio", 0.0))
        if m.learner.get("learn_s"):
            self.learner_tps.set(m.learner["learner_tokens"] / m.learner["learn_s"])
        for phase in PHASES:
            self.phase_seconds.labels(phase=phase).set(m.phases.get(phase, 0.0))
        self.cost.set(m.cost.get("cost_dollars", 0.0))
        for key, value in m.cost.items():
            if key.startswith(("gpu_hours/", "cpu_hours/")):
                kind, role = key.split("/")
                (self.gpu_hours if kind == "gpu_hours" else self.cpu_hours).labels(role=role).set(value)

    def close(self, linger_s: float = 0.0) -> None:
        """Keep serving `linger_s` more seconds (a last scrape sees the final values), then stop."""
        if self.server is not None:
            time.sleep(linger_s)
            self.server.shutdown()
            self.server.server_close()
            self.server = None

"""What a run costs: accelerator- and CPU-hours per role, integrated over the run, and dollars.

Open-RS's headline is a 1.5B reasoning model for $42 (4 x A40, 24 h). Hours come from the resources
each role's actors hold (a generator or learner holds one GPU with cluster.use_gpu), multiplied by the
time they held them; the engine count can change mid-run, so the meter integrates step by step.
"""

from __future__ import annotations

import time

from openrs_ray.config import RunConfig

ROLES = ("generator", "learner", "verifier")


class CostMeter:
    """Accumulates GPU-hours and CPU-hours per role; `dollars` prices them with cfg.cost."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.gpu_hours = dict.fromkeys(ROLES, 0.0)
        self.cpu_hours = dict.fromkeys(ROLES, 0.0)
        self._last = time.monotonic()

    def _held(self, num_engines: int) -> dict[str, tuple[float, float]]:
        """(GPUs, CPUs) held per role right now."""
        cc, gpu = self.cfg.cluster, 1.0 if self.cfg.cluster.use_gpu else 0.0
        learners, verifiers = self.cfg.learner.num_learners, self.cfg.rewards.num_workers
        return {
            "generator": (gpu * num_engines, cc.generator_cpus * num_engines),
            "learner": (gpu * learners, cc.learner_cpus * learners),
            "verifier": (0.0, cc.verifier_cpus * verifiers),
        }

    def tick(self, num_engines: int, now: float | None = None) -> None:
        """Charge the time since the last tick at the resources held now."""
        now = time.monotonic() if now is None else now
        hours, self._last = (now - self._last) / 3600.0, now
        for role, (gpus, cpus) in self._held(num_engines).items():
            self.gpu_hours[role] += gpus * hours
            self.cpu_hours[role] += cpus * hours

    @property
    def dollars(self) -> float:
        """GPU-hours at cost.gpu_hour_usd plus CPU-hours as a share of a cost.cpu_node_cpus-core node."""
        c = self.cfg.cost
        cpu_nodes = sum(self.cpu_hours.values()) / c.cpu_node_cpus
        return sum(self.gpu_hours.values()) * c.gpu_hour_usd + cpu_nodes * c.cpu_node_hour_usd

    def summary(self) -> dict[str, float]:
        """GPU-hours, CPU-hours (per role and total) and dollars, for metrics and the run summary."""
        out = {f"gpu_hours/{r}": h for r, h in self.gpu_hours.items()}
        out |= {f"cpu_hours/{r}": h for r, h in self.cpu_hours.items()}
        out |= {"gpu_hours": sum(self.gpu_hours.values()), "cpu_hours": sum(self.cpu_hours.values())}
        return out | {"cost_dollars": self.dollars}

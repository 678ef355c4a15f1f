"""Run-plumbing sections of a run's configuration: weight broadcast, cluster, metrics, cost, checkpoints.

Kept apart from the training sections (openrs_ray.config.sections) so that each file stays small; both are
assembled by RunConfig in openrs_ray.config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from openrs_ray.config.base import _Section


class BroadcastConfig(_Section):
    backend: Literal["object_store", "collective"] = "object_store"
    """How learner rank 0 ships weights: Ray object store, or a process group with the engines (gloo/NCCL)."""
    bucket_size_mb: int = Field(default=256, ge=1)
    """Weights travel in buckets of about this size, bounding extra memory."""
    timeout_s: float = Field(default=300.0, gt=0)
    """Longest wait for one engine to load a weight version; past it the run fails naming the engine."""


class ClusterConfig(_Section):
    address: str | None = None
    """Ray address to join ('auto', 'ray://host:10001'); None starts an embedded local Ray."""
    num_cpus: int | None = Field(default=None, ge=1)
    """Logical CPUs of the embedded local Ray (None: Ray's default)."""
    object_store_memory_gb: float | None = Field(default=None, gt=0)
    """Object store size of the embedded local Ray; None: 2 GiB on CPU, on GPU two weight versions + 1 GiB."""
    use_gpu: bool = False
    """Give each generator and learner actor one GPU."""
    generator_cpus: float = Field(default=1.0, ge=0)
    """Logical CPUs reserved per generator actor."""
    learner_cpus: float = Field(default=1.0, ge=0)
    """Logical CPUs reserved per learner actor."""
    verifier_cpus: float = Field(default=0.5, ge=0)
    """Logical CPUs reserved per verifier actor."""
    env_vars: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for every actor."""
    worker_niceness: int = Field(default=0, ge=0, le=19)
    """Niceness of the embedded local Ray's workers (the actors). Ray's own default, 15, lets any other work on
    the machine take the CPU from them; 0 runs them like the driver. A cluster that is joined keeps its own."""
    gpu_actor_threads: int = Field(default=8, ge=1)
    """OpenMP threads of a GPU actor reserved with fewer than one CPU (KubeRay's num_cpus=0 would give it 1)."""
    preflight: bool = True
    """Check the cluster's GPUs, CPUs, role resources and object store before spawning; off for autoscaling
    clusters."""
    role_resources: bool = False
    """Pin each role to its nodes: generator actors also request the custom Ray resource `generator`, learners
    `learner`, verifiers `verifier` (amounts in role_resource_amounts), which only nodes started with e.g.
    `ray start --resources '{"generator": 1}'` offer (the KubeRay worker groups do)."""
    role_resource_amounts: dict[Literal["generator", "learner", "verifier"], float] = Field(
        default_factory=lambda: {"generator": 1.0, "learner": 1.0, "verifier": 1.0}
    )
    """Amount of its role resource one actor requests (a role left out: 1). Ray takes fractions up to 1 or
    whole numbers: 0.5 puts two engines on a node offering `generator: 1`."""
    placement_timeout_s: float = Field(default=15.0, gt=0)
    """How long the replacement of a lost engine or verifier may wait to be placed (its node may be gone and
    no other node free). Past it a lost engine is dropped and the run goes on with the rest; verifiers that
    cannot be placed stop the run with a checkpoint."""

    @model_validator(mode="after")
    def _ray_amounts(self) -> ClusterConfig:
        for role, amount in self.role_resource_amounts.items():
            if amount <= 0 or (amount > 1 and amount != int(amount)):
                raise ValueError(
                    f"cluster.role_resource_amounts.{role}: {amount:g} is not a Ray resource amount "
                    "(a fraction in (0, 1] or a whole number)"
                )
        return self


class MetricsConfig(_Section):
    jsonl: bool = True
    """Write one JSON line per step to OUTPUT_DIR/metrics.jsonl."""
    progress_bar: bool = True
    """Show a rich progress bar on the driver."""
    prometheus_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve Prometheus metrics from the driver on this port (0: any free port; None: off)."""
    prometheus_host: str = "0.0.0.0"
    """Address the metrics endpoint binds to."""
    linger_s: float = Field(default=0.0, ge=0)
    """Keep the endpoint up this long after the run, so a last scrape sees the final values."""
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    """Trackers that receive every metrics.jsonl key at each step (TRL's names; none by default): tensorboard
    (event files in OUTPUT_DIR/tensorboard), wandb (WANDB_PROJECT, WANDB_MODE=offline works), mlflow
    (MLFLOW_TRACKING_URI, else a file store in OUTPUT_DIR/mlruns). Install them with `pip install '.[track]'`."""
    run_name: str | None = None
    """The run's name in the trackers (None: output_dir's last folder name)."""


class CostConfig(_Section):
    gpu_hour_usd: float = Field(default=0.44, ge=0)
    """Price of one GPU-hour (0.44: an A40, what Open-RS's $42 for 4 x A40 x 24 h works out to)."""
    cpu_node_hour_usd: float = Field(default=0.0, ge=0)
    """Price of one CPU node-hour (CPU-only actors are charged as a share of such a node)."""
    cpu_node_cpus: int = Field(default=32, ge=1)
    """CPUs of that node."""


class CheckpointConfig(_Section):
    save_steps: int = Field(default=0, ge=0)
    """Save every N steps (0: never)."""
    keep_last: int = Field(default=2, ge=1)
    """Checkpoints kept in OUTPUT_DIR/checkpoints (older ones are deleted)."""
    auto_resume: bool = False
    """When a role is lost for good (a learner node: a ZeRO group cannot shrink), the driver rebuilds every role
    from the newest checkpoint once the cluster has room again, as `train --resume` would, instead of stopping."""
    auto_resume_retries: int = Field(default=2, ge=0)
    """Most automatic resumes per run; each is logged. Past it the loss stops the run."""
    auto_resume_wait_s: float = Field(default=300.0, ge=0)
    """How long each automatic resume waits for the cluster to offer every role's resources again."""

"""Ray cluster: join one (ray job submit, `cluster.address`) or start an embedded local one; check before
spawning that it can hold every role; the environment and placement of GPU and CPU actors."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from openrs_ray.config import ClusterConfig, ConfigError, ModelConfig, RunConfig

GIB = 2**30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

RAY_WORKER_NICENESS = "RAY_worker_niceness"


@contextmanager
def _worker_niceness(niceness: int | None) -> Iterator[None]:
    """Ray starts its workers at niceness 15 (RAY_worker_niceness), so on a machine shared with other work
    the actors lose the CPU to everything else. The Ray processes ray.init starts read the variable from the
    environment they inherit; the driver's own environment is restored afterwards."""
    if niceness is None:
        yield
        return
    before = os.environ.get(RAY_WORKER_NICENESS)
    os.environ[RAY_WORKER_NICENESS] = str(niceness)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RAY_WORKER_NICENESS, None)
        else:
            os.environ[RAY_WORKER_NICENESS] = before


@contextmanager
def ray_cluster(cc: ClusterConfig, model: ModelConfig | None = None) -> Iterator[None]:
    """Connect to or start Ray for the block; a cluster we started is stopped on exit, whatever happens.

    Inside a `ray job submit` job RAY_ADDRESS is set and ray.init joins that cluster. An already
    initialised Ray (tests, notebooks) is used as is and left running for its owner.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs: dict = {"address": cc.address, "log_to_driver": True}
    if not joining(cc):
        kwargs.update(
            num_cpus=cc.num_cpus,
            object_store_memory=int(object_store_gb(cc, model) * GIB),
            include_dashboard=False,
        )
    with _worker_niceness(None if joining(cc) else cc.worker_niceness):
        ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def joining(cc: ClusterConfig) -> bool:
    """True when the run joins an existing cluster (cluster.address, or RAY_ADDRESS inside `ray job submit`)."""
    return cc.address is not None or "RAY_ADDRESS" in os.environ


def object_store_gb(cc: ClusterConfig, model: ModelConfig | None) -> float:
    """The embedded object store: as configured, else 2 GiB on CPU and, on GPU, room for two weight
    versions of the model (a published one and its successor) plus 1 GiB."""
    if cc.object_store_memory_gb is not None:
        return cc.object_store_memory_gb
    size = weights_bytes(model) if cc.use_gpu and model is not None else None
    return max(2.0, 2 * size / GIB + 1.0) if size else 2.0


def weights_bytes(mc: ModelConfig) -> int | None:
    """Bytes of one full weight version in the run's dtype, from the safetensors headers (no weights are
    read); None when the files are neither local nor in the Hugging Face cache and the hub cannot say."""
    from safetensors import safe_open

    folder = Path(mc.path)
    if not folder.is_dir():
        try:  # a hub id: its files when already downloaded, else the hub's safetensors metadata
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(mc.path, local_files_only=True, allow_patterns=["*.safetensors"]))
        except Exception:  # noqa: BLE001 - not cached (or no hub at all): ask the hub, then give up
            return _hub_weights_bytes(mc)
    numel = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            numel += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118
    return numel * BYTES[mc.dtype] if numel else None


def _hub_weights_bytes(mc: ModelConfig) -> int | None:
    try:
        from huggingface_hub import get_safetensors_metadata

        counts = get_safetensors_metadata(mc.path).parameter_count
    except Exception:  # noqa: BLE001 - offline, gated or not safetensors: the pre-flight cannot size it
        return None
    return sum(counts.values()) * BYTES[mc.dtype]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def role_counts(cfg: RunConfig) -> dict[str, int]:
    """Actors of each role alive at the same time at the stage's peak (GPU roles: engine, learner)."""
    gen, learners = cfg.generation.num_engines, cfg.learner.num_learners
    evaluating = bool(cfg.eval.eval_steps and cfg.eval.benchmarks)
    if cfg.stage == "rl":
        return {"engine": gen, "learner": learners, "verifier": cfg.rewards.num_workers}
    teacher = gen if cfg.stage == "kd_token" and cfg.kd.teacher_source == "vllm" else 0
    counts = {"engine": teacher + (gen if evaluating else 0), "learner": learners}
    counts["verifier"] = cfg.rewards.num_workers if evaluating else 0
    if cfg.stage == "kd_seq":  # the teacher's pass (engines + verifiers) runs before the learners start
        counts["engine"] = max(counts["engine"], gen)
        counts["verifier"] = cfg.rewards.num_workers
    return counts


ROLE_RESOURCE = {"engine": "generator", "learner": "learner", "verifier": "verifier"}


def role_resources(cc: ClusterConfig, role: str) -> dict[str, float]:
    """The custom Ray resource one actor of `role` (generator, learner, verifier) requests; {} when off."""
    if not cc.role_resources:
        return {}
    return {role: cc.role_resource_amounts.get(role, 1.0)}


def actor_request(cc: ClusterConfig, role: str) -> dict[str, float]:
    """Everything one actor of `role` (engine, learner, verifier) must find on a single node."""
    cpus = {"engine": cc.generator_cpus, "learner": cc.learner_cpus, "verifier": cc.verifier_cpus}[role]
    gpus = 1.0 if cc.use_gpu and role != "verifier" else 0.0
    request = {"CPU": cpus, "GPU": gpus, **role_resources(cc, ROLE_RESOURCE[role])}
    return {k: v for k, v in request.items() if v > 0}


def check_resources(cfg: RunConfig, wait_s: float | None = None) -> None:
    """Fail in seconds, with one line naming what is missing, when the cluster cannot hold every role.

    Without this a role that never schedules waits silently until learner.timeout_s (30 minutes). Counts
    the cluster's total GPUs, logical CPUs and object store against what the stage's actors reserve. A
    joined cluster gets `wait_s` (default 60 s) for worker nodes still registering; an embedded one none.
    """
    import ray

    wait_s = (60.0 if joining(cfg.cluster) else 0.0) if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while (missing := _missing(cfg, ray.cluster_resources(), _nodes())) and time.monotonic() < deadline:
        time.sleep(2.0)
    if missing:
        raise ConfigError(missing)
    _check_object_store(cfg, ray.cluster_resources().get("object_store_memory", 0.0))


def _nodes() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _missing(cfg: RunConfig, have: dict[str, float], nodes: list[dict[str, float]] | None = None) -> str | None:
    """The one-line shortage of GPUs, CPUs or role resources, or None when the roles fit.

    `have` is the cluster's total; `nodes` (each alive node's total) adds the check that one actor, or one
    learner placement-group bundle, fits on a single node: Ray never splits a bundle, even under PACK.
    """
    cc, counts = cfg.cluster, role_counts(cfg)
    if cc.use_gpu:
        gpu_roles = {k: v for k, v in counts.items() if k != "verifier" and v}
        need = sum(gpu_roles.values())
        if have.get("GPU", 0) < need:
            roles = " + ".join(_plural(n, role) for role, n in gpu_roles.items())
            has = int(have.get("GPU", 0))
            return f"cluster.use_gpu: needs {_plural(need, 'GPU')} for {roles}; the cluster has {has}"
    each = {"engine": cc.generator_cpus, "learner": cc.learner_cpus, "verifier": cc.verifier_cpus}
    cpus = sum(counts[r] * each[r] for r in counts)
    if have.get("CPU", 0) + 1e-9 < cpus:
        parts = " + ".join(f"{_plural(counts[r], r)} x {each[r]:g}" for r in counts if counts[r] and each[r])
        return f"cluster: needs {cpus:g} CPUs for {parts} (cluster.*_cpus); the cluster has {have.get('CPU', 0):g}"
    return _missing_roles(cc, counts, have) or (_missing_node(cc, counts, nodes) if nodes is not None else None)


def _missing_roles(cc: ClusterConfig, counts: dict[str, int], have: dict[str, float]) -> str | None:
    """The first role resource the cluster offers too little of in total (cluster.role_resources)."""
    for role, n in counts.items():
        for name, amount in role_resources(cc, ROLE_RESOURCE[role]).items():
            if n and have.get(name, 0.0) + 1e-9 < n * amount:
                return (
                    f"cluster.role_resources: needs {n * amount:g} '{name}' for {_plural(n, role)} x {amount:g} "
                    f"(cluster.role_resource_amounts); the cluster has {have.get(name, 0.0):g}"
                )
    return None


def _shortfall(node: dict[str, float], need: dict[str, float]) -> tuple[int, int]:
    return sum(node.get(k, 0.0) + 1e-9 < v for k, v in need.items()), sum(node.get(k, 0.0) <= 0 for k in need)


def _missing_node(cc: ClusterConfig, counts: dict[str, int], nodes: list[dict[str, float]]) -> str | None:
    """The first role one of whose actors (a learner: its placement-group bundle) no single node can hold."""
    for role, n in counts.items():
        need = actor_request(cc, role)
        if not n or not need or any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in need.items()) for node in nodes):
            continue
        # The node that comes closest (fewest resources short, then fewest lacking entirely: the role's own
        # node rather than one without the role resource) shows what is lacking.
        best = min(nodes, key=lambda node: _shortfall(node, need), default={})
        what = "bundle" if role == "learner" else "actor"
        wanted = ", ".join(f"{k} {v:g}" for k, v in need.items())
        offers = ", ".join(f"{k} {best.get(k, 0.0):g}" for k in need)
        return f"cluster: one {role} {what} needs {wanted} on a single node; the best node offers {offers}"
    return None


def _check_object_store(cfg: RunConfig, store: float) -> None:
    """One published weight version (and a late joiner's catch-up) must fit in the object store."""
    size = weights_bytes(cfg.model)
    if size and store < 1.1 * size:
        raise ConfigError(
            f"cluster.object_store_memory_gb: the object store ({store / GIB:.1f} GiB) cannot hold one weight "
            f"version of {cfg.model.path} ({size / GIB:.1f} GiB); set cluster.object_store_memory_gb to at least "
            f"{math.ceil(2 * size / GIB + 1)} (or start Ray with a larger --object-store-memory)"
        )


def actor_env(cc: ClusterConfig, num_cpus: float, num_gpus: int) -> dict[str, str]:
    """Environment of a generator or learner actor (the user's cluster.env_vars win).

    Ray no longer hides GPUs from actors given none: an empty CUDA_VISIBLE_DEVICES keeps a CPU actor on
    the CPU path on a GPU machine. GPU actors reserved with zero CPUs (KubeRay) would get one OpenMP
    thread from Ray; they get gpu_actor_threads instead.
    """
    env: dict[str, str] = {}
    if num_gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        env["OMP_NUM_THREADS"] = str(max(1, math.ceil(num_cpus)) if num_cpus >= 1 else cc.gpu_actor_threads)
    return {**env, **cc.env_vars}


def where() -> dict[str, Any]:
    """Node and GPU of the calling actor, for the placement record in metrics.jsonl."""
    import ray

    return {
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }

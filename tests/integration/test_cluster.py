"""The embedded local Ray (openrs_ray.cluster): its actors run at the driver's niceness, not Ray's 15."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from tests.conftest import REPO
from tests.integration.conftest import leftover_processes

# In a fresh process: the session's ray_local fixture may already be up in this one, and ray_cluster
# would join it instead of starting its own.
SCRIPT = """
import json, os, ray
from openrs_ray.cluster import ray_cluster
from openrs_ray.config import ClusterConfig

@ray.remote(num_cpus=0)
def niceness():
    return os.getpriority(os.PRIO_PROCESS, 0)

with ray_cluster(ClusterConfig(num_cpus=1, object_store_memory_gb=0.1, worker_niceness={nice})):
    actor_nice = ray.get(niceness.remote(), timeout=120)
print(json.dumps({{"driver": os.getpriority(os.PRIO_PROCESS, 0), "actor": actor_nice,
                  "env_left": os.environ.get("RAY_worker_niceness")}}))
"""


def _niceness(worker_niceness: int) -> dict:
    tag = uuid.uuid4().hex
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(nice=worker_niceness)],
        cwd=REPO, env={**os.environ, "OPENRS_TEST_TAG": tag}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not leftover_processes(tag), "the embedded Ray was not stopped"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_embedded_workers_run_at_the_drivers_niceness() -> None:
    seen = _niceness(0)  # the default of cluster.worker_niceness
    assert seen["actor"] == seen["driver"], seen  # Ray alone would start it at driver + 15
    assert seen["env_left"] is None  # the driver's environment is restored after ray.init

"""One Ray cluster of four nodes on loopback, shared by the multi-node tests (each node is a `ray start` this module
starts and stops by its pid; never `ray stop`): a head with the learner, a verifier node and two generator nodes.

- The smoke run submitted through deploy/submit.sh with cluster.role_resources=true puts every generator, learner
  and verifier on a node holding its role (Ray's state API says where each actor ran); one generator node is
  killed mid-run (its raylet and every process on it) and the run finishes on the other, each prompt trained once.
- The verifier node killed mid-run, when no other node offers `verifier`: the driver stops within a bounded time
  with one line naming the lost verifiers and a complete checkpoint of its last completed step, from which
  `openrs-ray train --resume` finishes the run once a verifier node is back.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import pytest

from openrs_ray.records.checkpoint import latest_checkpoint, read_state
from tests.conftest import REPO
from tests.integration.conftest import leftover_processes
from tests.integration.loopback import (
    LoopbackCluster,
    assert_each_prompt_once,
    cluster_state,
    node_env,
    poll,
    run_steps,
)

# name: (logical CPUs, role resources). The head also holds the drivers (a job's, or the test's).
HEAD = (2, {"learner": 1})
WORKERS = {"verify": (1, {"verifier": 2}), "gen1": (1, {"generator": 1}), "gen2": (1, {"generator": 1})}
ROLE_OF_CLASS = {"VLLMGenerator": "generator", "DeepSpeedLearner": "learner", "Verifier": "verifier"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    tag = uuid.uuid4().hex
    # Ray's GCS declares a silent node dead after 5 missed 1 s health checks (its default waits ~5 x 3 s).
    env = {**node_env(tag), "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
    c = LoopbackCluster(tag, env)
    try:
        c.start(HEAD, WORKERS)
        yield c
    finally:
        c.stop()
    assert not leftover_processes(tag)
    assert all(p.poll() is not None for p in [*c.killed, *c.procs.values()])


def _job_env(c: LoopbackCluster) -> dict[str, str]:
    return {**c.env, "RAY_ADDRESS": f"http://127.0.0.1:{c.dash}"}


def _submit(c: LoopbackCluster, job_id: str, overrides: list[str]) -> subprocess.CompletedProcess:
    env = {**_job_env(c), "OPENRS_JOB_ID": job_id, "PYTHON": sys.executable, "OPENRS_NO_WAIT": "1"}
    cmd = [str(REPO / "deploy/submit.sh"), "configs/smoke.yaml", *overrides]
    deadline = time.monotonic() + 120
    while True:  # a fresh head's job agent takes a few seconds to register
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        if "No available agent" not in proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(2)


class Job:
    """A submitted job, asked through the dashboard's Jobs REST API (cheap enough to poll every second)."""

    def __init__(self, c: LoopbackCluster, job_id: str) -> None:
        self.url, self.status, self.asked = f"http://127.0.0.1:{c.dash}/api/jobs/{job_id}", "", 0.0

    def done(self) -> bool:
        """True once the job has ended (asks at most once a second)."""
        if time.monotonic() - self.asked >= 1:
            self.asked = time.monotonic()
            with urlopen(self.url, timeout=30) as r:
                self.status = json.load(r)["status"]
        return self.status in ("SUCCEEDED", "FAILED", "STOPPED")

    def logs(self) -> str:
        with urlopen(f"{self.url}/logs", timeout=30) as r:
            return json.load(r)["logs"]


def test_roles_on_their_nodes_and_a_generator_node_lost(cluster: LoopbackCluster, tiny_model: Path, tmp_path: Path):
    run, job_id = tmp_path / "run", f"openrs-multinode-{cluster.tag[:8]}"
    overrides = [f"model.path={tiny_model}", f"output_dir={run}", "metrics.progress_bar=false",
                 "cluster.role_resources=true", "generation.num_engines=2", "max_steps=8", "buffer.max_staleness=1",
                 "cluster.placement_timeout_s=5"]  # fmt: skip
    proc = _submit(cluster, job_id, overrides)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job = Job(cluster, job_id)
    poll("the first step", 600, lambda: len(run_steps(run)) >= 1 or job.done())
    killed = cluster.kill("gen2")  # the node and its engine, mid-run (a batch is always in flight)
    assert len(run_steps(run)) < 8, job.status + job.logs()[-3000:]  # the job was still running
    assert len(killed) >= 3  # ray start, its raylet and agents, the engine's worker
    poll("the job to end", 600, job.done)
    logs = job.logs()
    assert job.status == "SUCCEEDED", job.status + logs[-4000:]

    steps = run_steps(run)
    assert_each_prompt_once(steps, 8, 2)  # the lost engine's prompts went to the survivor, none twice
    last = steps[-1]
    assert (last["generator_restarts"], last["nodes_lost"], last["num_engines"]) == (1, 1, 1), last
    assert steps[0]["num_engines"] == 2
    assert "no node can place a replacement" in logs

    # Where every actor ran (Ray's state API keeps ended actors, with their node).
    offers = {role: {cluster.node_ids[n] for n, res in cluster.resources.items() if res.get(role)}
              for role in ROLE_OF_CLASS.values()}  # fmt: skip
    assert all(offers.values()) and sum(map(len, offers.values())) == len(set().union(*offers.values())), offers
    placed = [(a["cls"], a["node"]) for a in cluster_state(cluster.env, cluster.dash)["actors"]
              if a["cls"] in ROLE_OF_CLASS]  # fmt: skip
    assert {cls for cls, _ in placed} == set(ROLE_OF_CLASS), placed
    assert sum(cls == "Verifier" for cls, _ in placed) >= 2  # smoke: rewards.num_workers=2
    wrong = [(cls, node) for cls, node in placed if node not in offers[ROLE_OF_CLASS[cls]]]
    assert not wrong, (wrong, offers)
    engines = [node for cls, node in placed if cls == "VLLMGenerator"]
    assert sorted(engines) == sorted([cluster.node_ids["gen1"], cluster.node_ids["gen2"]])  # one on each


def _train(c: LoopbackCluster, args: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "openrs_ray.cli", "train", "configs/smoke.yaml", *args]
    return subprocess.Popen(cmd, cwd=REPO, env={**c.env, "PYTHONUNBUFFERED": "1"}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)  # fmt: skip


def test_verifier_node_lost_stops_with_a_checkpoint_then_resumes(
    cluster: LoopbackCluster, tiny_model: Path, tmp_path: Path
) -> None:
    run, log = tmp_path / "run", tmp_path / "driver.log"
    common = [f"model.path={tiny_model}", "metrics.progress_bar=false", f"cluster.address={cluster.address}",
              "cluster.role_resources=true", "max_steps=6", "buffer.max_staleness=1",
              "cluster.placement_timeout_s=5"]  # fmt: skip
    driver = _train(cluster, [*common, f"output_dir={run}"], log)
    try:
        poll("the first step", 600, lambda: len(run_steps(run)) >= 1 or driver.poll() is not None)
        assert driver.poll() is None, log.read_text()[-3000:]
        cluster.kill("verify")  # the only node offering `verifier`, mid-run
        t0 = time.monotonic()
        rc = driver.wait(timeout=300)
        stopped_s = time.monotonic() - t0
    finally:
        if driver.poll() is None:
            driver.kill()
    out = log.read_text()
    print(f"driver stopped {stopped_s:.1f} s after the verifier node was killed")
    assert rc == 1, out[-4000:]
    assert stopped_s < 90, stopped_s  # seen and acted on at once, not after rewards.timeout_s (600 s)
    lines = [line for line in out.splitlines() if "openrs-ray: stopped:" in line]
    assert len(lines) == 1, out[-4000:]
    found = re.search(r"verifier\(s\) \[0, 1\] were lost and no node can place one .*; checkpoint saved at (\S+)$",
                      lines[0])  # fmt: skip
    assert found, lines[0]
    ckpt = Path(found.group(1))
    done = len(run_steps(run))
    assert ckpt == latest_checkpoint(run) == run / "checkpoints" / f"step-{done}" and 1 <= done < 6, (ckpt, done)
    state, _, _ = read_state(ckpt)
    assert state["step"] == done and (ckpt / "policy" / "deepspeed").is_dir()

    # A verifier node is back: the run continues from that checkpoint and finishes, each prompt trained once.
    cluster.add("verify2", *WORKERS["verify"])
    resumed = subprocess.run([sys.executable, "-m", "openrs_ray.cli", "train", "configs/smoke.yaml", *common,
                              "--resume", str(run)], cwd=REPO, env=cluster.env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"(step {done})" in resumed.stdout
    assert_each_prompt_once(run_steps(run), 6, 2)

"""A three-node Ray cluster on loopback (`ray start --head` + two `ray start --address` workers, each with its
own role resource and CPU count): the smoke run submitted through deploy/submit.sh with
cluster.role_resources=true puts every generator, learner and verifier on the node holding its role, as
Ray's state API reports it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import REPO
from tests.integration.conftest import leftover_processes
from tests.integration.loopback import (
    BIN,
    cluster_state,
    free_port,
    head_args,
    node_env,
    port_open,
    start_node,
    stop_nodes,
    wait_for,
)

# Node layout: the head keeps the driver and the verifiers; one worker per GPU role. Logical CPUs only.
NODES = {
    "head": (2, {"verifier": 2}),
    "gen": (4, {"generator": 1}),
    "learn": (4, {"learner": 1}),
}
ROLE_OF_CLASS = {"VLLMGenerator": "generator", "DeepSpeedLearner": "learner", "Verifier": "verifier"}


def _submit(env: dict[str, str], dash: int, job_id: str, overrides: list[str]) -> subprocess.CompletedProcess:
    submit_env = {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dash}", "OPENRS_JOB_ID": job_id,
                  "PYTHON": sys.executable, "OPENRS_NO_WAIT": "1"}  # fmt: skip
    cmd = [str(REPO / "deploy/submit.sh"), "configs/smoke.yaml", *overrides]
    deadline = time.monotonic() + 120
    while True:  # a fresh head's job agent takes a few seconds to register
        proc = subprocess.run(cmd, env=submit_env, cwd=REPO, capture_output=True, text=True, timeout=300)
        if "No available agent" not in proc.stderr or time.monotonic() > deadline:
            return proc
        time.sleep(2)


def _job(env: dict[str, str], dash: int, job_id: str, timeout: float) -> tuple[str, str]:
    job_env = {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dash}"}
    deadline, state = time.monotonic() + timeout, ""
    while time.monotonic() < deadline and not any(x in state for x in ("succeeded", "failed", "stopped")):
        time.sleep(3)
        status = subprocess.run([str(BIN / "ray"), "job", "status", job_id], env=job_env, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        state = (status.stdout + status.stderr).lower()
    logs = subprocess.run([str(BIN / "ray"), "job", "logs", job_id], env=job_env, capture_output=True, text=True,
                          timeout=60).stdout  # fmt: skip
    return state, logs


def test_roles_land_on_their_nodes(tiny_model: Path, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    temps = {name: tempfile.mkdtemp(prefix=f"orr{name[0]}", dir="/tmp") for name in NODES}  # short: socket paths
    env = node_env(tag)
    gcs, dash = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    try:
        cpus, res = NODES["head"]
        procs.append(start_node(env, temps["head"], cpus, res, head_args(gcs, dash)))
        wait_for("the head's GCS and dashboard", 180, lambda: port_open(gcs) and port_open(dash))
        for name in ("gen", "learn"):
            cpus, res = NODES[name]
            procs.append(start_node(env, temps[name], cpus, res, [f"--address=127.0.0.1:{gcs}"]))
        wait_for("three alive nodes", 180, lambda: sum(n["alive"] for n in cluster_state(env, dash)["nodes"]) == 3)

        job_id, out = f"openrs-multinode-{tag[:8]}", tmp_path / "run"
        overrides = [f"model.path={tiny_model}", f"output_dir={out}", "metrics.progress_bar=false",
                     "cluster.role_resources=true"]  # fmt: skip
        proc = _submit(env, dash, job_id, overrides)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        state, logs = _job(env, dash, job_id, 600)
        assert "succeeded" in state, state + logs[-3000:]
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 2

        seen = cluster_state(env, dash)
        role_node = {}  # role resource -> the one node offering it
        for node in seen["nodes"]:
            for role in ROLE_OF_CLASS.values():
                if node["resources"].get(role):
                    role_node[role] = node["id"]
        assert len(role_node) == 3 and len(set(role_node.values())) == 3, seen["nodes"]
        placed = [(a["cls"], a["node"]) for a in seen["actors"] if a["cls"] in ROLE_OF_CLASS]
        assert {cls for cls, _ in placed} == set(ROLE_OF_CLASS), seen["actors"]
        assert sum(cls == "Verifier" for cls, _ in placed) >= 2  # smoke: rewards.num_workers=2
        wrong = [(cls, node) for cls, node in placed if node != role_node[ROLE_OF_CLASS[cls]]]
        assert not wrong, (wrong, role_node)
    finally:
        stop_nodes(procs, tag)
        for temp in temps.values():
            shutil.rmtree(temp, ignore_errors=True)
    assert not leftover_processes(tag)
    assert all(p.poll() is not None for p in procs)

"""A three-node Ray cluster on loopback (`ray start --head` + two `ray start --address` workers, each with its
own role resource and CPU count): the smoke run submitted through deploy/submit.sh with
cluster.role_resources=true puts every generator, learner and verifier on the node holding its role, as
Ray's state API reports it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import REPO
from tests.integration.conftest import leftover_processes

BIN = Path(sys.executable).parent
# Node layout: the head keeps the driver and the verifiers; one worker per GPU role. Logical CPUs only.
NODES = {
    "head": (2, {"verifier": 2}),
    "gen": (4, {"generator": 1}),
    "learn": (4, {"learner": 1}),
}
ROLE_OF_CLASS = {"VLLMGenerator": "generator", "DeepSpeedLearner": "learner", "Verifier": "verifier"}

# Ray's state API, asked from a fresh process (this one may hold the session's own embedded Ray).
STATE = """
import json, sys
from ray.util.state import list_actors, list_nodes
addr = sys.argv[1]
nodes = [{"id": n.node_id, "alive": n.state == "ALIVE", "resources": n.resources_total}
         for n in list_nodes(address=addr, timeout=30)]
actors = [{"cls": a.class_name, "node": a.node_id, "state": a.state}
          for a in list_actors(address=addr, limit=1000, timeout=30)]
print(json.dumps({"nodes": nodes, "actors": actors}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_node(env: dict[str, str], temp: str, cpus: int, resources: dict, head_args: list[str]) -> subprocess.Popen:
    """`ray start --block` in its own process group: the test stops exactly this node by that group."""
    cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
           f"--resources={json.dumps(resources)}", "--object-store-memory=500000000", f"--temp-dir={temp}",
           "--disable-usage-stats",
           # Own ports for every agent: another Ray on this machine (other tests, CI) holds the defaults.
           f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
           f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}", *head_args]  # fmt: skip
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _state(env: dict[str, str], dash: int) -> dict:
    out = subprocess.run([sys.executable, "-c", STATE, f"http://127.0.0.1:{dash}"], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wait(what: str, timeout: float, check) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


def _stop(procs: list[subprocess.Popen], tag: str) -> None:
    """SIGTERM each node's process group (workers first), SIGKILL what is left, then any straggler that
    carries our marker variable (Ray's worker processes are this test's descendants)."""
    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in reversed(procs):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)
    for entry in leftover_processes(tag):
        try:
            os.kill(int(entry.split(":")[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


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
    # Ray 2.60 turns token auth on by default; a loopback test cluster opts out (ENV_NOTES.md).
    env = {**os.environ, "OPENRS_TEST_TAG": tag, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    procs: list[subprocess.Popen] = []
    try:
        cpus, res = NODES["head"]
        head_args = ["--head", f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                     f"--ray-client-server-port={_free_port()}"]  # fmt: skip
        procs.append(_start_node(env, temps["head"], cpus, res, head_args))
        _wait("the head's GCS and dashboard", 180, lambda: _port_open(gcs) and _port_open(dash))
        for name in ("gen", "learn"):
            cpus, res = NODES[name]
            procs.append(_start_node(env, temps[name], cpus, res, [f"--address=127.0.0.1:{gcs}"]))
        _wait("three alive nodes", 180, lambda: sum(n["alive"] for n in _state(env, dash)["nodes"]) == 3)

        job_id, out = f"openrs-multinode-{tag[:8]}", tmp_path / "run"
        overrides = [f"model.path={tiny_model}", f"output_dir={out}", "metrics.progress_bar=false",
                     "cluster.role_resources=true"]  # fmt: skip
        proc = _submit(env, dash, job_id, overrides)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        state, logs = _job(env, dash, job_id, 600)
        assert "succeeded" in state, state + logs[-3000:]
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 2

        seen = _state(env, dash)
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
        _stop(procs, tag)
        for temp in temps.values():
            shutil.rmtree(temp, ignore_errors=True)
    assert not leftover_processes(tag)
    assert all(p.poll() is not None for p in procs)

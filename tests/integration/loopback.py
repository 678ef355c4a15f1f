"""A Ray cluster of several nodes on loopback, for multi-node tests: each node is one `ray start --block` in its
own process group, started and stopped by this process (never `ray stop`, which would end other tests' Ray)."""

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
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.integration.conftest import leftover_processes

BIN = Path(sys.executable).parent

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


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(env: dict[str, str], temp: str, cpus: int, resources: dict, head_args: list[str]) -> subprocess.Popen:
    """`ray start --block` in its own process group: the test stops exactly this node by that group."""
    cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
           f"--resources={json.dumps(resources)}", "--object-store-memory=500000000", f"--temp-dir={temp}",
           "--disable-usage-stats",
           # Own ports for every agent: another Ray on this machine (other tests, CI) holds the defaults.
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}", *head_args]  # fmt: skip
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cluster_state(env: dict[str, str], dash: int) -> dict:
    """Nodes and actors as Ray's state API reports them (asked from a fresh process)."""
    out = subprocess.run([sys.executable, "-c", STATE, f"http://127.0.0.1:{dash}"], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for(what: str, timeout: float, check) -> None:
    """Poll `check` every 2 s until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


def stop_nodes(procs: list[subprocess.Popen], tag: str, grace_s: float = 15) -> None:
    """SIGTERM every node's process group at once, SIGKILL what is left after `grace_s` in all, then any straggler
    that carries our marker variable (Ray's worker processes are this test's descendants)."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
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


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def kill_node(proc: subprocess.Popen) -> list[int]:
    """SIGKILL a whole node as a machine failure would: the `ray start` process, its raylet and every process
    below it (actor workers, vLLM engines), found through the process tree of the pid this test started."""
    root = psutil.Process(proc.pid)
    victims = [root, *root.children(recursive=True)]
    for p in victims:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)
    proc.wait(timeout=30)
    return [p.pid for p in victims]


def head_args(gcs: int, dash: int) -> list[str]:
    """`ray start` arguments of a loopback head with its GCS on `gcs` and its dashboard on `dash`."""
    return ["--head", f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={free_port()}"]  # fmt: skip


def node_env(tag: str) -> dict[str, str]:
    """Environment of the nodes and drivers: our marker variable, Ray's token auth off (ENV_NOTES.md)."""
    env = {**os.environ, "OPENRS_TEST_TAG": tag, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class LoopbackCluster:
    """A head and worker nodes on loopback, each one `ray start --block` this process started and stops. Every node
    also offers a marker resource `loopback_<name>`, so that Ray's node ids can be told apart by node name."""

    tag: str
    env: dict[str, str]
    gcs: int = field(default_factory=free_port)
    dash: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)  # alive nodes by name
    killed: list[subprocess.Popen] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)
    node_ids: dict[str, str] = field(default_factory=dict)  # node name -> Ray node id
    resources: dict[str, dict] = field(default_factory=dict)  # node name -> its role resources

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    def _start(self, name: str, cpus: int, resources: dict, args: list[str]) -> None:
        temp = tempfile.mkdtemp(prefix=f"orl{name[:3]}", dir="/tmp")  # short: Ray's socket paths have a limit
        self.temps.append(temp)
        self.resources[name] = resources
        self.procs[name] = start_node(self.env, temp, cpus, {**resources, f"loopback_{name}": 1}, args)

    def start(self, head: tuple[int, dict], workers: dict[str, tuple[int, dict]]) -> None:
        """The head, then every worker at once; returns when all are alive, with their node ids known."""
        self._start("head", *head, head_args(self.gcs, self.dash))
        wait_for("the head's GCS and dashboard", 180, lambda: port_open(self.gcs) and port_open(self.dash))
        for name, (cpus, resources) in workers.items():
            self._start(name, cpus, resources, [f"--address={self.address}"])
        self._wait_alive([*workers, "head"])

    def add(self, name: str, cpus: int, resources: dict) -> None:
        """One more worker node (e.g. a lost role's node coming back); returns once it is alive."""
        self._start(name, cpus, resources, [f"--address={self.address}"])
        self._wait_alive([name])

    def _wait_alive(self, names: list[str]) -> None:
        def known() -> bool:
            for node in cluster_state(self.env, self.dash)["nodes"]:
                for name in names:
                    if node["alive"] and node["resources"].get(f"loopback_{name}"):
                        self.node_ids[name] = node["id"]
            return all(name in self.node_ids for name in names)

        wait_for(f"nodes {names} to be alive", 180, known)

    def kill(self, name: str) -> list[int]:
        """SIGKILL a node and everything on it, as a machine failure would (see kill_node)."""
        proc = self.procs.pop(name)
        self.killed.append(proc)
        return kill_node(proc)

    def stop(self) -> None:
        """Stop every node by its process group (the workers together, while the head's GCS still answers their
        goodbyes, then the head), then remove the nodes' temp folders."""
        workers = [p for name, p in self.procs.items() if name != "head"]
        stop_nodes([*self.killed, *workers], self.tag)
        stop_nodes([self.procs["head"]] if "head" in self.procs else [], self.tag)
        for temp in self.temps:
            shutil.rmtree(temp, ignore_errors=True)


def run_steps(run: Path) -> list[dict]:
    """The metrics.jsonl lines a run folder holds so far."""
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def poll(what: str, timeout: float, check) -> None:
    """Poll every 50 ms: a tiny-model step takes well under a second."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def assert_each_prompt_once(steps: list[dict], max_steps: int, per_step: int) -> None:
    """Steps 1..max_steps were recorded, and no prompt was trained twice or lost."""
    assert [m["step"] for m in steps] == list(range(1, max_steps + 1))
    uids = [u for m in steps for u in m["prompt_uids"]]
    assert len(uids) == max_steps * per_step and len(set(uids)) == len(uids), uids

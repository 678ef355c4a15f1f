"""A multi-node Ray cluster on loopback for benchmarks: `ray start --head` plus `ray start --address` workers,
each with its own CPU count and role resources, each in its own process group so that exactly these nodes
are stopped (never `ray stop`, which would end every Ray on the machine).

The same layout as tests/integration/test_multinode.py (whose helpers stay with that test).
"""

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start_node(env: dict[str, str], temp: str, cpus: int, resources: dict, extra: list[str]) -> subprocess.Popen:
    cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
           f"--resources={json.dumps(resources)}", "--object-store-memory=500000000", f"--temp-dir={temp}",
           "--disable-usage-stats", "--include-dashboard=false",
           # Own ports for every agent: another Ray on this machine holds the defaults.
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
           f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}", *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(len([n for n in ray.nodes() if n['Alive']]))"
    )
    out = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    return int(lines[-1]) if out.returncode == 0 and lines else 0


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each node's process group (workers first), then SIGKILL what is left."""
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


@contextmanager
def loopback_cluster(nodes: dict[str, tuple[int, dict]], timeout_s: float = 240) -> Iterator[str]:
    """Start the nodes (the first is the head); yields the GCS address; stops every node it started.

    Sets RAY_AUTH_MODE=disabled in this process too: Ray 2.60 enables token auth by default and a loopback
    cluster opts out (see ENV_NOTES.md), so the driver that joins must do the same.
    """
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    temps = {name: tempfile.mkdtemp(prefix=f"orb{name[0]}", dir="/tmp") for name in nodes}  # short: socket paths
    gcs = free_port()
    address = f"127.0.0.1:{gcs}"
    procs: list[subprocess.Popen] = []
    try:
        (head, (cpus, res)), *workers = nodes.items()
        head_args = ["--head", f"--port={gcs}", f"--ray-client-server-port={free_port()}"]
        procs.append(_start_node(env, temps[head], cpus, res, head_args))
        deadline = time.monotonic() + timeout_s
        while not _port_open(gcs):
            if time.monotonic() > deadline:
                raise TimeoutError("the head's GCS did not open its port")
            time.sleep(1)
        for name, (cpus, res) in workers:
            procs.append(_start_node(env, temps[name], cpus, res, [f"--address={address}"]))
        while _alive_nodes(address, env) < len(nodes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {len(nodes)} nodes came up within {timeout_s}s")
            time.sleep(2)
        yield address
    finally:
        _stop(procs)
        for temp in temps.values():
            shutil.rmtree(temp, ignore_errors=True)

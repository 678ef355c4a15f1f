"""generation.autoscale's resource request against Ray's own autoscaler: a loopback head started with an
autoscaling config (Ray's fake multi-node provider, which launches real Ray nodes on this machine, as KubeRay
launches pods). `request_engines` asks for two engines' resources; the autoscaler adds two `generator` nodes,
actors needing an engine's resources are placed there, and when the request drops to zero the idle nodes go.
Everything is stopped by the pids this test started (the autoscaler's nodes are the head's descendants)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.integration.conftest import leftover_processes
from tests.integration.loopback import free_port, head_args, node_env, port_open, start_node, stop_nodes, wait_for

ENGINE = {"generator": 1.0}  # one engine's request under cluster.role_resources (CPU 0 on CPU runs)

# Runs in a fresh driver joined to the cluster: the autoscaler module's own call, then Ray's view of it.
DRIVER = """
import sys, time, ray
from openrs_ray.autoscale import request_engines

def generator_nodes():
    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("generator")]

def until(what, check, timeout=240):
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(1)
    return round(time.monotonic() - t0, 1)

ray.init(address=sys.argv[1])
assert not generator_nodes()
request_engines({"generator": 1.0}, 2)
grew = until("two generator nodes", lambda: len(generator_nodes()) == 2)

@ray.remote(num_cpus=0, resources={"generator": 1})
class Engine:
    def node(self):
        return ray.get_runtime_context().get_node_id()

engines = [Engine.remote() for _ in range(2)]
placed = ray.get([e.node.remote() for e in engines], timeout=120)
assert sorted(placed) == sorted(n["NodeID"] for n in generator_nodes()), placed
for e in engines:
    ray.kill(e)
request_engines({"generator": 1.0}, 0)
shrank = until("the idle generator nodes to go", lambda: not generator_nodes())
print(f"RESULT grew_s={grew} shrank_s={shrank}", flush=True)
"""


def _autoscaling_config(gcs: int) -> dict:
    """A cluster config for Ray's fake multi-node provider: a head that takes no engine, and a `gen` node type
    (one engine each) the autoscaler may launch twice; idle nodes are removed after 6 s. The provider's
    nodes are up as soon as launched: no updaters, no launch-config check (as Ray's own example config)."""
    commands = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files", "rsync_exclude",
                "rsync_filter"]  # fmt: skip
    return {
        "cluster_name": "openrs-loopback", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{gcs}", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True}, "auth": {"ssh_user": "ray"},
        "docker": {}, "file_mounts": {}, "file_mounts_sync_continuously": False,
        "head_node_type": "ray.head.default", **{key: [] for key in commands},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gen": {"resources": {"CPU": 1, "object_store_memory": 200_000_000, **ENGINE}, "node_config": {},
                    "min_workers": 0, "max_workers": 2},
        },
    }  # fmt: skip


def test_engine_request_is_answered_by_rays_autoscaler(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    temp = tempfile.mkdtemp(prefix="oras", dir="/tmp")  # short: socket paths
    gcs, dash = free_port(), free_port()
    config = tmp_path / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(_autoscaling_config(gcs)))
    # The fake provider runs only under RAY_FAKE_CLUSTER; the autoscaler looks every second, not every 5.
    env = {**node_env(tag), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    procs: list[subprocess.Popen] = []
    try:
        procs.append(start_node(env, temp, 1, {}, [*head_args(gcs, dash), f"--autoscaling-config={config}"]))
        wait_for("the head's GCS", 180, lambda: port_open(gcs) and port_open(dash))
        out = subprocess.run([sys.executable, "-c", DRIVER, f"127.0.0.1:{gcs}"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    finally:
        stop_nodes(procs, tag)
        shutil.rmtree(temp, ignore_errors=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))
    print(result)
    assert not leftover_processes(tag)

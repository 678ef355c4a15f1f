"""`deploy/submit.sh` against a real `ray start --head` cluster on loopback: the smoke run SUCCEEDS."""

from __future__ import annotations

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_smoke_job(tiny_model: Path, tmp_path: Path) -> None:
    tag, temp = uuid.uuid4().hex, tempfile.mkdtemp(prefix="orr", dir="/tmp")  # short: Ray's socket paths
    bin_dir = Path(sys.executable).parent
    # Ray 2.60 turns token auth on by default; a loopback test cluster opts out (ENV_NOTES.md).
    env = {**os.environ, "OPENRS_TEST_TAG": tag, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    dash = _free_port()
    start = [str(bin_dir / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
             f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--num-cpus=8",
             "--object-store-memory=1000000000", f"--temp-dir={temp}", "--disable-usage-stats",
             # Own ports for every agent: another Ray on this machine (other tests, CI) holds the defaults.
             f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
             f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
             f"--ray-client-server-port={_free_port()}"]  # fmt: skip
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
        job_id = f"openrs-test-{tag[:8]}"
        submit_env = {**env, "RAY_ADDRESS": f"http://127.0.0.1:{dash}", "OPENRS_JOB_ID": job_id,
                      "PYTHON": sys.executable, "OPENRS_NO_WAIT": "1"}  # fmt: skip
        out = tmp_path / "run"
        cmd = [str(REPO / "deploy/submit.sh"), "configs/smoke.yaml", f"model.path={tiny_model}",
               f"output_dir={out}", "metrics.progress_bar=false"]  # fmt: skip
        deadline = time.monotonic() + 120
        while True:  # a fresh head's job agent takes a few seconds to register
            proc = subprocess.run(cmd, env=submit_env, cwd=REPO, capture_output=True, text=True, timeout=900)
            if "No available agent" not in proc.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        deadline, state = time.monotonic() + 600, ""
        while time.monotonic() < deadline and not any(x in state for x in ("succeeded", "failed", "stopped")):
            time.sleep(3)
            status = subprocess.run([str(bin_dir / "ray"), "job", "status", job_id], env=submit_env,
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            state = (status.stdout + status.stderr).lower()  # "Job 'ID' succeeded"
        logs = subprocess.run([str(bin_dir / "ray"), "job", "logs", job_id], env=submit_env,
                              capture_output=True, text=True, timeout=60).stdout  # fmt: skip
        assert "succeeded" in state, state + logs[-3000:]
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    finally:
        # Stop exactly the cluster this test started (never `ray stop`, which would end every Ray here).
        for entry in leftover_processes(tag):
            os.kill(int(entry.split(":")[0]), signal.SIGKILL)
        time.sleep(1)
        shutil.rmtree(temp, ignore_errors=True)
    assert not leftover_processes(tag)

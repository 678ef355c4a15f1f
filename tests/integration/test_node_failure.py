"""Node failure, not just actor failure: a learner killed mid-run with checkpoint.auto_resume, and verifiers that
Ray re-creates or that no node can hold. Real Ray, vLLM, DeepSpeed and math-verify; every process is stopped by
its pid. The whole-node losses (a generator node, the verifier node) run on the loopback cluster of
test_multinode.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import ray

from openrs_ray.config import load_config
from openrs_ray.errors import VerifiersLost
from openrs_ray.rewards.pool import VerifierPool
from tests.conftest import REPO
from tests.integration.conftest import leftover_processes
from tests.integration.loopback import assert_each_prompt_once, poll, run_steps, wait_for


def _driver(env: dict[str, str], overrides: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "openrs_ray.cli", "train", "configs/smoke.yaml", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)  # fmt: skip


def _shm() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("deepspeed_*")}


def _learner_pid(tag: str) -> int | None:
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if (
                "DeepSpeedLearner" in " ".join(proc.info["cmdline"] or [])
                and proc.environ().get("OPENRS_TEST_TAG") == tag
            ):
                return proc.info["pid"]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


def test_learner_lost_stops_at_once_and_auto_resumes(tiny_model: Path, tmp_path: Path) -> None:
    tag, run, log = uuid.uuid4().hex, tmp_path / "run", tmp_path / "driver.log"
    env = {**os.environ, "OPENRS_TEST_TAG": tag}
    overrides = [f"model.path={tiny_model}", f"output_dir={run}", "metrics.progress_bar=false", "max_steps=6",
                 "checkpoint.save_steps=2", "checkpoint.auto_resume=true", "checkpoint.auto_resume_retries=1",
                 "checkpoint.auto_resume_wait_s=60"]  # fmt: skip
    shm_before = _shm()
    driver = _driver(env, overrides, log)
    try:
        marker = run / "checkpoints" / "step-2" / "state.json"
        poll("the step-2 checkpoint", 600, lambda: marker.exists() or driver.poll() is not None)
        pid = _learner_pid(tag)
        assert pid is not None and driver.poll() is None, log.read_text()[-3000:]
        os.kill(pid, signal.SIGKILL)  # the learner's process dies (as with its node): the ZeRO group is gone
        t0 = time.monotonic()
        wait_for("the loss to be seen", 120, lambda: "auto_resume 1/1" in log.read_text() or driver.poll() is not None)
        noticed_s = time.monotonic() - t0
        assert driver.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        for entry in leftover_processes(tag):
            os.kill(int(entry.split(":")[0]), signal.SIGKILL)
        for name in _shm() - shm_before:  # the killed rank could not remove its shared-memory buffers
            Path("/dev/shm", name).unlink(missing_ok=True)
    out = log.read_text()
    assert noticed_s < 60, noticed_s  # seen through Ray's error at once, not after learner.timeout_s (1800 s)
    assert "learner rank 0 was lost" in out and "rebuilding from" in out and "step-2" in out, out[-3000:]
    assert "(step 2)" in out  # resumed from the intact step-2 checkpoint
    assert_each_prompt_once(run_steps(run), 6, 2)


@pytest.mark.usefixtures("ray_local")
def test_verifier_recreated_or_run_stops(tiny_model: Path) -> None:
    cfg = load_config("configs/smoke.yaml", [f"model.path={tiny_model}", "cluster.placement_timeout_s=3"])
    pool = VerifierPool(cfg)
    try:  # re-creation: the actor's process dies, Ray places it again, the pool goes on
        pool.count_restarts()
        pid = ray.get(pool.actors[0].__ray_call__.remote(lambda self: os.getpid()), timeout=60)
        os.kill(pid, signal.SIGKILL)
        pool.check()
        assert pool.count_restarts() == 1
    finally:
        pool.shutdown()
    # No node offers the `verifier` resource (its node is gone): a clear error within seconds, not a hang.
    lost = VerifierPool(load_config("configs/smoke.yaml", ["cluster.role_resources=true",
                                                           "cluster.placement_timeout_s=3"]))  # fmt: skip
    t0 = time.monotonic()
    try:
        with pytest.raises(VerifiersLost, match=r"verifier\(s\) \[0, 1\] were lost and no node can place one"):
            lost.check()
        assert time.monotonic() - t0 < 15
    finally:
        for actor in lost.actors:
            ray.kill(actor, no_restart=True)

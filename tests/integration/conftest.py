"""Integration fixtures: one local Ray cluster and one trained flow per test run (engines start once)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """An embedded local Ray for in-process tests; stopped at the end of the session."""
    import ray

    ray.init(num_cpus=8, object_store_memory=1 << 30, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def leftover_processes(tag: str) -> list[str]:
    """Processes still alive that inherited our marker environment variable (the CLI's descendants)."""
    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if proc.environ().get("OPENRS_TEST_TAG") == tag:
                found.append(f"{proc.info['pid']}:{proc.info['name']}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def run_cli(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `openrs-ray ARGS` in a subprocess; returns the result and any process it left behind."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "OPENRS_TEST_TAG": tag, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "openrs_ray.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return proc, leftover_processes(tag)


@pytest.fixture(scope="session")
def smoke_overrides(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides that point configs/smoke.yaml at the session's tiny model."""
    return [f"model.path={tiny_model}"]


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"

"""The pre-flight check: a cluster too small for the run's roles fails in seconds with one line (exit 2),
instead of a role that never schedules and a silent wait until learner.timeout_s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import run_cli


def _one_line_error(out_dir: Path, *overrides: str) -> str:
    t0 = time.monotonic()
    proc, left = run_cli("train", "configs/smoke.yaml", f"output_dir={out_dir}", *overrides, timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert elapsed < 60, f"took {elapsed:.0f}s"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("openrs-ray:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not left, f"processes left behind: {left}"
    assert not (out_dir / "metrics.jsonl").exists()  # nothing started: the same command can be rerun
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # This machine has no GPU: 1 engine + 1 learner need 2.
        (["cluster.use_gpu=true"], "cluster.use_gpu: needs 2 GPUs for 1 engine + 1 learner; the cluster has 0"),
        (
            ["cluster.num_cpus=2", "learner.num_learners=2"],
            "needs 4 CPUs for 1 engine x 1 + 2 learners x 1 + 2 verifiers x 0.5 (cluster.*_cpus); the cluster has 2",
        ),
        # An embedded Ray advertises no role resources: pinning roles to nodes cannot work on it.
        (
            ["cluster.role_resources=true"],
            "cluster.role_resources: needs 1 'generator' for 1 engine x 1 (cluster.role_resource_amounts); "
            "the cluster has 0",
        ),
    ],
)
def test_too_small_cluster_fails_fast(
    smoke_overrides: list[str], out_dir: Path, overrides: list[str], message: str
) -> None:
    line = _one_line_error(out_dir, *smoke_overrides, *overrides)
    assert line.endswith(message), line

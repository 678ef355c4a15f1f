"""Exact resume through the CLI: 4 steps straight versus 2 steps, SIGKILL of the driver, resume, 2 more.

Asynchronous mode (max_staleness=1), so a batch is in flight on the engines when the checkpoint is
taken: it must be re-issued on resume, neither lost nor trained twice. The kill lands right after the step-2
checkpoint is complete, often before metrics.jsonl has step 2's line; the test makes that the case every time (it
drops the line), and resume must restore it from the checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.conftest import REPO
from tests.integration.conftest import leftover_processes, run_cli

ARGS = ["max_steps=4", "buffer.max_staleness=1", "checkpoint.save_steps=2", "checkpoint.keep_last=1"]


def _uids(run: Path) -> list[tuple[int, list[str]]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(m["step"], m["prompt_uids"]) for m in lines]


def _kill_after_first_checkpoint(overrides: list[str], run: Path) -> None:
    tag = uuid.uuid4().hex
    env = {**os.environ, "OPENRS_TEST_TAG": tag}
    cmd = [sys.executable, "-m", "openrs_ray.cli", "train", "configs/smoke.yaml", *overrides]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run / "checkpoints" / "step-2" / "state.json"
    try:
        deadline = time.monotonic() + 600
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the run never wrote its step-2 checkpoint"
        proc.send_signal(signal.SIGKILL)  # the driver dies mid-run, wherever it is
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60  # Ray's processes follow their driver
        while leftover_processes(tag) and time.monotonic() < deadline:
            time.sleep(1)
        assert not leftover_processes(tag), "processes outlived the killed driver"
    finally:
        proc.kill()
        for entry in leftover_processes(tag):
            os.kill(int(entry.split(":")[0]), signal.SIGKILL)


def test_resume_consumes_the_same_prompts_once(smoke_overrides: list[str], tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc, left = run_cli("train", "configs/smoke.yaml", *smoke_overrides, *ARGS, f"output_dir={straight}")
    assert proc.returncode == 0 and not left, proc.stderr[-3000:]

    _kill_after_first_checkpoint([*smoke_overrides, *ARGS, f"output_dir={killed}"], killed)
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    written = [json.loads(line) for line in lines if json.loads(line)["step"] == 2]
    (killed / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines if json.loads(line)["step"] < 2))
    proc, left = run_cli("train", "configs/smoke.yaml", *smoke_overrides, *ARGS, "--resume", str(killed))
    assert proc.returncode == 0 and not left, proc.stderr[-3000:]
    assert "(step 2)" in proc.stdout

    expected = _uids(straight)
    assert [s for s, _ in expected] == [1, 2, 3, 4]
    assert _uids(killed) == expected  # same prompts, same order, each step once
    restored = json.loads((killed / "metrics.jsonl").read_text().splitlines()[1])
    assert written in ([], [restored])  # when the killed run wrote it, the restored line is that line
    all_uids = [u for _, uids in expected for u in uids]
    assert len(all_uids) == len(set(all_uids)) == 8
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["step-4"]  # keep_last=1

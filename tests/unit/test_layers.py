"""The import layers of pyproject.toml's [tool.importlinter] contract hold (what `make lint` runs), and the
contract does catch an import that runs back up (a copy of the package with one added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # analyse this tree's openrs_ray, not an installed one
    cmd = [LINT, "--no-cache", "--no-logo"]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_layers_hold() -> None:
    proc = _lint(REPO)
    assert proc.returncode == 0 and "1 kept, 0 broken" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(REPO / "openrs_ray", tmp_path / "openrs_ray", ignore=shutil.ignore_patterns("__pycache__", "*.gz"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    base = tmp_path / "openrs_ray" / "config" / "base.py"  # the config layer reaching up into rewards/
    base.write_text(base.read_text() + "\nfrom openrs_ray.rewards.registry import BUILTIN_REWARDS  # noqa\n")
    proc = _lint(tmp_path)
    assert proc.returncode == 1 and "0 kept, 1 broken" in proc.stdout, proc.stdout[-3000:]
    assert "openrs_ray.config.base -> openrs_ray.rewards.registry" in proc.stdout, proc.stdout[-3000:]

"""Pre-flight (openrs_ray.run.preflight): names the config layer cannot check, one line and exit 2 in the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from openrs_ray.cli import main
from openrs_ray.config import ConfigError, load_config
from openrs_ray.run.preflight import check_names
from tests.conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")


def test_config_loads_without_rewards_or_eval() -> None:
    """The config layer imports neither rewards/ nor eval/ (the circle config → eval → config is gone)."""
    code = "import sys, openrs_ray.config; print(sorted(m for m in sys.modules if m.startswith('openrs_ray.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "openrs_ray.config" in out and "openrs_ray.rewards" not in out and "openrs_ray.eval" not in out, out


@pytest.mark.parametrize(
    ("override", "start", "words"),
    [
        ("rewards.functions=[{name: acuracy}]", "rewards: unknown reward function(s) ['acuracy']", "tag_count"),
        ("eval.benchmarks=[math500, aime25]", "eval.benchmarks: unknown benchmark 'aime25'", "aime24, math500"),
    ],
)
def test_unknown_names_fail_at_preflight(override: str, start: str, words: str) -> None:
    cfg = load_config(SMOKE, [override])  # loads: the names are not the config's to know
    with pytest.raises(ConfigError) as err:
        check_names(cfg)
    assert str(err.value).startswith(start) and words in str(err.value) and "\n" not in str(err.value)


def test_known_names_pass() -> None:
    check_names(load_config(SMOKE, ["eval.benchmarks=[MATH-500, gsm8k, my_set.jsonl]"]))


def test_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`train` with a reward typo: exit 2, one error line, before anything is written or started."""
    code = main(["train", SMOKE, f"output_dir={tmp_path / 'run'}", "rewards.functions=[{name: acuracy}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("openrs-ray: error: rewards: unknown reward"), err
    assert not (tmp_path / "run").exists()

"""A user's reward function from their own file, reading a dataset column the project has never heard of,
trained through the CLI: its logged component is exactly what the function returned on those completions."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from openrs_ray.rewards.custom import load_function
from tests.conftest import REPO
from tests.integration.conftest import run_cli

REWARD = """
import json

RECORD = {record!r}

def brevity(prompts, completions, completion_token_counts, target_length, **kwargs):
    out = [None if t is None else -abs(n - t) / t for n, t in zip(completion_token_counts, target_length)]
    with open(RECORD, "a") as f:  # what it saw and returned, for the test to re-score
        f.write(json.dumps({{"prompts": prompts, "completions": completions, "counts": completion_token_counts,
                            "target_length": target_length, "out": out}}) + "\\n")
    return out
"""


def _data(tmp_path: Path) -> Path:
    """The smoke data with a `target_length` column; every third row has none (the reward does not apply)."""
    rows = [json.loads(line) for line in (REPO / "configs/data/gsm8k_mini.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["target_length"] = None if i % 3 == 2 else 4 + 6 * (i % 4)
    path = tmp_path / "gsm8k_target_length.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_custom_reward_reads_a_new_column_and_is_logged(smoke_overrides: list[str], out_dir: Path, tmp_path: Path):
    record = tmp_path / "calls.jsonl"
    reward_file = tmp_path / "my_rewards.py"
    reward_file.write_text(REWARD.format(record=str(record)))
    functions = (
        "rewards.functions=[{name: accuracy, weight: 1.0}, {name: format, weight: 1.0}, "
        f"{{name: brevity, function: '{reward_file}:brevity', weight: 0.5}}]"
    )
    args = ("train", "configs/smoke.yaml", *smoke_overrides, f"data.path={_data(tmp_path)}", functions)
    proc, left = run_cli(*args, f"output_dir={out_dir}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not left, f"processes left behind: {left}"
    steps = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:  # every completion scored, none dropped: the calls split into steps by count
        assert (m["groups_trained"], m["verify_errors"], m["verify_timeouts"], m["dropped_unparsable"]) == (2, 0, 0, 0)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls[0]["completions"]) == 2  # the start-up probe, in the CLI process
    calls = calls[1:]
    assert len(calls) == 2 * 2 * 4 and all(len(c["completions"]) == 1 for c in calls)  # steps x prompts x samples
    brevity = load_function(f"{reward_file}:brevity")
    for c in calls:  # the function on those completions returns what was trained on
        again = brevity(
            c["prompts"], c["completions"], completion_token_counts=c["counts"], target_length=c["target_length"]
        )
        assert again == c["out"]
    assert {c["target_length"][0] for c in calls} - {None}, "the new column never reached the reward"
    for m, part in zip(steps, (calls[:8], calls[8:]), strict=True):
        applied = [c["out"][0] for c in part if c["out"][0] is not None]
        assert m["reward/brevity"] == (statistics.fmean(applied) if applied else 0.0)

"""User reward functions (rewards/custom.py): loading errors, the kwargs they get, None, the child process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from openrs_ray.cli import main
from openrs_ray.config import ConfigError, RewardsConfig, load_config, parse_config
from openrs_ray.records.runlog import rollout_metrics
from openrs_ray.rewards.custom import CustomRewardError, check_custom_rewards, load_function, register_custom
from openrs_ray.rewards.registry import REWARD_FUNCTIONS, RewardContext, score_sample
from openrs_ray.rewards.sandbox import SampleScorer
from openrs_ray.run.preflight import check_names
from openrs_ray.types import Prompt, Rollout, ScoredGroup

REWARDS = """
import time

def brevity(prompts, completions, completion_token_counts, target_length, **kwargs):
    return [None if t is None else -abs(n - t) / t for n, t in zip(completion_token_counts, target_length)]

def echo(prompts, completions, **kwargs):
    return [float(len(p) + 10 * len(c)) + (0.5 if "answer" in kwargs else 0.0) for p, c in zip(prompts, completions)]

def one_value(prompts, completions, **kwargs):
    return [1.0]

def no_kwargs(prompts, completions):
    return [0.0] * len(completions)

def text(prompts, completions, **kwargs):
    return ["good"] * len(completions)

def slow(prompts, completions, **kwargs):
    time.sleep(30)
    return [0.0]

def crash(prompts, completions, **kwargs):
    raise RuntimeError("boom")

NOT_A_FUNCTION = 3
"""


@pytest.fixture()
def rewards_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARDS)
    return path


def test_load_errors_name_the_problem(rewards_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_function(f"{rewards_file}:echo")(["p"], ["cc"]) == [21.0]
    (tmp_path / "broken.py").write_text("def f(:\n")
    cases = {
        f"{tmp_path}/absent.py:f": "file not found",
        f"{tmp_path}/broken.py:f": "cannot import: SyntaxError",
        f"{rewards_file}:missing": "has no attribute 'missing'",
        f"{rewards_file}:no_kwargs": "must take (prompts, completions, **kwargs)",
        f"{rewards_file}:NOT_A_FUNCTION": "is a int, not a function",
        "no_such_package_xyz.mod:f": "cannot import: ModuleNotFoundError",
        "just_a_name": "expected 'file.py:function'",
    }
    for spec, message in cases.items():
        with pytest.raises(CustomRewardError, match=re.escape(message)):
            load_function(spec)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_function("my_rewards:echo")(["p"], ["c"], answer=["4"]) == [11.5]  # a module path works too


def _config_with(reward: str, data: Path) -> object:
    return load_config(
        Path("configs/smoke.yaml"),
        [f"data.path={data}", f"rewards.functions=[{{name: mine, function: '{reward}'}}]"],
    )


@pytest.fixture()
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    rows = [{"question": "What is 2+2?", "answer": "4", "target_length": 8}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_startup_check_probes_the_first_row(rewards_file: Path, data_file: Path) -> None:
    check_custom_rewards(_config_with(f"{rewards_file}:brevity", data_file))  # reads target_length: fine
    for fn, message in [
        ("one_value", "returned 1 values for 2 completions"),
        ("text", "returned str 'good', expected a float or None"),
        ("crash", "raised on a probe call with the first data row: RuntimeError: boom"),
        ("no_kwargs", "must take"),
    ]:
        with pytest.raises(ConfigError, match=r"^rewards\.functions\[mine\]\.function: .*" + message.split("(")[0]):
            check_custom_rewards(_config_with(f"{rewards_file}:{fn}", data_file))


def test_cli_exits_2_with_one_line_before_ray(
    rewards_file: Path, data_file: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [f"model.path={tiny_model}", f"data.path={data_file}", f"output_dir={tmp_path / 'run'}"]
    spec = f"rewards.functions=[{{name: mine, function: '{rewards_file}:one_value'}}]"
    assert main(["train", "configs/smoke.yaml", *args, spec]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # as tests/integration/test_cli
    assert len(err) == 1 and "rewards.functions[mine].function" in err[0] and "returned 1 values" in err[0], err
    assert not (tmp_path / "run").exists()  # nothing started


def test_config_resolves_files_and_rejects_clashes(rewards_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(rewards_file.parent)
    cfg = RewardsConfig(functions=[{"name": "mine", "function": "my_rewards.py:brevity"}])
    assert cfg.functions[0].function == f"{rewards_file}:brevity"  # relative to the working directory
    assert RewardsConfig(functions=[{"name": "mine", "function": "pkg.mod:f"}]).functions[0].function == "pkg.mod:f"
    with pytest.raises(ValueError, match="appears twice"):
        RewardsConfig(functions=[{"name": "format"}, {"name": "format"}])
    # Names against the registry: at pre-flight (the config layer does not import rewards/).
    shadow = parse_config({"model": {"path": "m"}, "rewards": [{"name": "accuracy", "function": "x.py:f"}]})
    with pytest.raises(ConfigError, match=r"^rewards.functions: \['accuracy'\] is a built-in reward"):
        check_names(shadow)
    with pytest.raises(ConfigError, match=r"^rewards: unknown reward function\(s\) \['brevity'\]"):
        check_names(parse_config({"model": {"path": "m"}, "rewards": [{"name": "brevity"}]}))  # must be a built-in


def test_kwargs_and_none_through_the_registry(rewards_file: Path) -> None:
    register_custom({"brevity": f"{rewards_file}:brevity", "echo": f"{rewards_file}:echo"})
    try:
        ctx = RewardContext("abc", "4", 3, 10, prompt="pp", token_count=6, columns={"target_length": 8, "answer": "4"})
        total, parts = score_sample(ctx, {"brevity": 2.0, "echo": 1.0, "format": 1.0})
        assert parts == {"brevity": -0.25, "echo": 32.5, "format": 0.0}  # |6-8|/8; 2 + 10*3 + 0.5
        assert total == pytest.approx(2.0 * -0.25 + 32.5)
        none_ctx = RewardContext("abc", "4", 3, 10, token_count=6, columns={"target_length": None})
        total, parts = score_sample(none_ctx, {"brevity": 2.0, "format": 1.0})
        assert parts == {"brevity": None, "format": 0.0} and total == 0.0  # None adds nothing
    finally:
        REWARD_FUNCTIONS.pop("brevity"), REWARD_FUNCTIONS.pop("echo")


def test_none_is_left_out_of_the_logged_mean() -> None:
    prompt = Prompt("p:0", "q", [1], "4")
    rollouts = [Rollout("p:0", [1], [2] * n, "x", [0.0] * n, "stop", 0, 0) for n in (1, 2, 3)]
    group = ScoredGroup(prompt, rollouts, [0.0, 0.0, 0.0], {"brevity": [-0.5, None, -0.25], "accuracy": [0.0] * 3})
    assert rollout_metrics([group])["reward/brevity"] == -0.375


def test_child_process_counts_errors_and_timeouts(rewards_file: Path) -> None:
    custom = {name: f"{rewards_file}:{name}" for name in ("brevity", "slow", "crash")}
    ctx = RewardContext("abc", "4", 3, 10, token_count=4, columns={"target_length": 8})
    scorer = SampleScorer({"brevity": 1.0}, 5.0, {"brevity": custom["brevity"]})
    try:
        (ok,) = scorer.score([ctx])
        assert ok.status == "ok" and ok.components == {"brevity": -0.5} and ok.total == -0.5
    finally:
        scorer.close()
    scorer = SampleScorer({"crash": 1.0, "accuracy": 0.0}, 5.0, {"crash": custom["crash"]})
    try:  # a user reward that raises: zero reward, counted, but accuracy is still measured
        (err,) = scorer.score([RewardContext("\\boxed{4}", "4", 3, 10)])
        assert (err.status, err.total, err.components) == ("error", 0.0, {"accuracy": 1.0}), err
        assert "RuntimeError: boom" in err.detail
    finally:
        scorer.close()
    for name, status in (("crash", "error"), ("slow", "timeout")):
        scorer = SampleScorer({name: 1.0}, 2.0, {name: custom[name]})
        try:
            assert [o.status for o in scorer.score([ctx])] == [status]
        finally:
            scorer.close()

"""Config loading: YAML + dotted overrides, and one clear error naming the key for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from openrs_ray.config import ConfigError, RunConfig, apply_overrides, check_paths, dump_config, load_config
from tests.conftest import REPO

SMOKE = REPO / "configs/smoke.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_smoke_config_loads_with_trl_names() -> None:
    cfg = load_config(SMOKE)
    assert cfg.max_steps == 2
    assert cfg.generation.num_generations == 4 and cfg.generation.max_completion_length == 32
    assert cfg.learner.loss_type == "bnpo" and cfg.learner.beta == 0.0 and cfg.learner.epsilon == 0.2
    assert [f.name for f in cfg.rewards.functions] == ["accuracy", "format", "cosine"]
    assert cfg.rows_per_step == 8


def test_dotted_overrides_parse_yaml_values() -> None:
    cfg = load_config(
        SMOKE, ["learner.lr=1e-6", "generation.num_engines=3", "data.shuffle=false", "learner.epsilon_high=0.28"]
    )
    assert cfg.learner.lr == 1e-6 and cfg.generation.num_engines == 3
    assert cfg.data.shuffle is False and cfg.learner.epsilon_high == 0.28


def test_override_creates_missing_sections() -> None:
    tree = apply_overrides({"model": {"path": "m"}}, ["checkpoint.save_steps=5"])
    assert tree == {"model": {"path": "m"}, "checkpoint": {"save_steps": 5}}


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("learner.lr=-1", "learner.lr", "greater than 0"),
        ("learner.lr=fast", "learner.lr", "valid number"),
        ("generation.num_generations=1", "generation.num_generations", "greater than or equal to 2"),
        ("learner.lrr=1e-6", "learner.lrr", "unknown key"),
        ("learner.loss_type=ppo", "learner.loss_type", "grpo"),
        ("learner.num_learners=3", "learner.num_learners", "whole groups"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [override])
    msg = str(err.value)
    assert msg.startswith(key) and words in msg and "\n" not in msg


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(_write(tmp_path, "model: {path: x\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="^model: Field required"):
        load_config(_write(tmp_path, "data: {path: d.jsonl}\n"))
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(SMOKE, ["learner.lr"])


def test_rewards_list_shorthand(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "model: {path: m}\ndata: {path: d}\nrewards: [{name: format, weight: 1.0}, {name: cosine, weight: 2.0}]\n",
    )
    cfg = load_config(path)
    assert [(f.name, f.weight) for f in cfg.rewards.functions] == [("format", 1.0), ("cosine", 2.0)]


def test_check_paths(tmp_path: Path) -> None:
    cfg = load_config(SMOKE, [f"model.path={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="^model.path: no Hugging Face model"):
        check_paths(cfg)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    cfg = load_config(SMOKE, [f"model.path={tmp_path / 'm'}", "data.path=missing/data.jsonl"])
    with pytest.raises(ConfigError, match="^data.path: file not found"):
        check_paths(cfg)
    # Hub ids are left to the hub loader.
    check_paths(load_config(SMOKE, ["model.path=Qwen/Qwen2.5-0.5B-Instruct", f"data.path={SMOKE}"]))


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load_config(SMOKE, ["learner.lr=3e-6"])
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_every_field_has_a_docstring() -> None:
    def walk(model: type) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{model.__name__}.{name}")
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                missing += walk(ann)
        return missing

    assert walk(RunConfig) == []

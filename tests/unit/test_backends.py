"""Backends by name: the lazily imported registry, its config keys, and the contracts the groups implement."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from openrs_ray.backends import BACKENDS
from openrs_ray.config import ConfigError, GenerationConfig, LearnerConfig, load_config
from openrs_ray.generators.base import ChannelReceivers, Generator, Generators
from openrs_ray.learners.base import ChannelSender, Learner, Learners
from openrs_ray.plugins import load_backend
from openrs_ray.rewards.base import GroupScorer, Verifiers

REPO = Path(__file__).resolve().parents[2]

OTHER_ENGINE = """
from openrs_ray.generators.vllm_actor import VLLMGenerator

class SGLangLike(VLLMGenerator):
    pass

class NotAnEngine:
    pass
"""


def test_defaults_resolve_to_the_shipped_backends() -> None:
    assert GenerationConfig().backend == "vllm"
    assert LearnerConfig().backend == "deepspeed"
    assert load_backend("generator", "vllm", Generator).__name__ == "VLLMGenerator"
    assert load_backend("learner", "deepspeed", Learner).__name__ == "DeepSpeedLearner"


def test_unknown_backend_is_one_config_error() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'fsdp'; known: \['deepspeed'\]"):
        LearnerConfig(backend="fsdp")
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs" / "smoke.yaml", ["generation.backend=sglang"])
    assert str(err.value) == (
        "generation.backend: unknown backend 'sglang'; known: ['vllm'], or your own 'file.py:Class' (got 'sglang')"
    )
    with pytest.raises(ConfigError, match=r"^learner.backend: unknown backend 'fsdp'"):
        load_backend("learner", "fsdp", Learner)


def test_a_registry_entry_or_a_file_adds_a_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "engines.py"
    path.write_text(OTHER_ENGINE)
    cfg = GenerationConfig(backend=f"{path}:SGLangLike")
    assert load_backend("generator", cfg.backend, Generator).__name__ == "SGLangLike"
    monkeypatch.setitem(BACKENDS["generator"], "sglang", f"{path}:SGLangLike")
    assert GenerationConfig(backend="sglang").backend == "sglang"
    assert load_backend("generator", "sglang", Generator).__name__ == "SGLangLike"


def test_a_backend_must_implement_the_role_abc(tmp_path: Path) -> None:
    path = tmp_path / "engines.py"
    path.write_text(OTHER_ENGINE)
    with pytest.raises(ConfigError, match=r"not a subclass of openrs_ray.generators.base.Generator"):
        load_backend("generator", f"{path}:NotAnEngine", Generator)
    with pytest.raises(ConfigError, match=r"not a subclass of openrs_ray.learners.base.Learner"):
        load_backend("learner", f"{path}:SGLangLike", Learner)
    with pytest.raises(ConfigError, match=r"^generation.backend: .*has no attribute 'Missing'"):
        load_backend("generator", f"{path}:Missing", Generator)


def test_groups_do_not_import_their_backend_at_import_time() -> None:
    code = (
        "import sys, openrs_ray.generators.group, openrs_ray.learners.group, openrs_ray.stages.orchestrator\n"
        "print(sorted(m for m in ('openrs_ray.generators.vllm_actor', 'openrs_ray.learners.deepspeed_actor',"
        " 'vllm', 'deepspeed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_groups_and_actors_implement_the_role_abcs() -> None:
    from openrs_ray.generators.group import GeneratorGroup
    from openrs_ray.learners.group import LearnerGroup
    from openrs_ray.rewards.pool import Verifier, VerifierPool

    assert issubclass(GeneratorGroup, Generators) and issubclass(GeneratorGroup, ChannelReceivers)
    assert issubclass(LearnerGroup, Learners) and issubclass(LearnerGroup, ChannelSender)
    assert issubclass(VerifierPool, Verifiers) and issubclass(Verifier, GroupScorer)
    assert issubclass(load_backend("generator", "vllm", Generator), Generator)
    assert issubclass(load_backend("learner", "deepspeed", Learner), Learner)
    for cls in (GeneratorGroup, LearnerGroup, VerifierPool, Verifier):
        assert not cls.__abstractmethods__, cls  # every declared verb is implemented


def test_no_remote_call_by_method_name_string() -> None:
    for path in (REPO / "openrs_ray").rglob("*.py"):
        text = path.read_text()
        assert "getattr(a, method)" not in text and '_all("' not in text, path


def test_a_user_backend_is_checked_at_start_up(tmp_path: Path) -> None:
    from openrs_ray.extensions import check_extensions

    path = tmp_path / "engines.py"
    path.write_text(OTHER_ENGINE)
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"learner.backend={path}:NotAnEngine"])
    with pytest.raises(ConfigError, match=r"^learner.backend: .*NotAnEngine' is not a subclass of .*Learner$"):
        check_extensions(cfg, probe=False)

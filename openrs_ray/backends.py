"""Backends by name: which class plays a role (a generator engine, a learner rank), imported only when used.

A second inference engine (SGLang) or trainer (FSDP) is one new module implementing the role's actor ABC
(`generators.base.Generator`, `learners.base.Learner`) plus one entry in BACKENDS; the config selects it
(`generation.backend: sglang`). A user's own class works without an entry, as "file.py:Class" or
"pkg.mod:Class". Entries are import strings, not classes: this module imports nothing of the project at load
time, so the config layer can check names here and no group pulls in vLLM or DeepSpeed before it starts one.
The loader is openrs_ray.plugins.load_backend (it needs the plugin importer, a layer above the config).
"""

from __future__ import annotations

from typing import Literal

Role = Literal["generator", "learner"]

BACKENDS: dict[Role, dict[str, str]] = {
    "generator": {"vllm": "openrs_ray.generators.vllm_actor:VLLMGenerator"},
    "learner": {"deepspeed": "openrs_ray.learners.deepspeed_actor:DeepSpeedLearner"},
}
CONFIG_KEYS: dict[Role, str] = {"generator": "generation.backend", "learner": "learner.backend"}


def check_backend(role: Role, name: str) -> str:
    """`name` if it is a registered backend of `role` or an import spec; a one-line ValueError otherwise (without
    the config key: pydantic's error location names it)."""
    if ":" in name or name in BACKENDS[role]:
        return name
    known = sorted(BACKENDS[role])
    raise ValueError(f"unknown backend {name!r}; known: {known}, or your own 'file.py:Class'")

